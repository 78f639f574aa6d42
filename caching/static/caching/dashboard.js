/* predcache dashboard: draws each canvas[data-chart] with Chart.js from the page's #dashboard-series JSON. */
"use strict";

(function () {
  const source = document.getElementById("dashboard-series");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  const series = JSON.parse(source.textContent);
  const colors = { blue: "#417690", green: "#2e8540", teal: "#1b7f7a", red: "#ba2121", amber: "#d88a00", grey: "#888888" };

  // A minute between minutes without a value (no traffic) would draw no line at all: give it a dot.
  function isolatedDot(context) {
    const values = context.dataset.data;
    const at = context.dataIndex;
    const missing = (index) => index < 0 || index >= values.length || values[index] === null;
    return values[at] !== null && missing(at - 1) && missing(at + 1) ? 3 : 0;
  }

  function line(label, data, color, extra) {
    return Object.assign(
      {
        label: label,
        data: data,
        borderColor: color,
        backgroundColor: color,
        pointRadius: isolatedDot,
        borderWidth: 1.5,
        spanGaps: false,
      },
      extra || {}
    );
  }

  const charts = {
    requests: {
      type: "line",
      datasets: [
        line("requests", series.requests, colors.blue),
        line("instances hit", series.hits, colors.green),
        line("of those, in-process (L1)", series.l1_hits, colors.teal),
        line("instances missed", series.misses, colors.red),
      ],
      y: { beginAtZero: true, ticks: { precision: 0 } },
    },
    hit_ratio: {
      type: "line",
      datasets: [line("hit ratio", series.hit_ratio, colors.green)],
      y: { min: 0, max: 1, ticks: { callback: (value) => Math.round(value * 100) + "%" } },
    },
    backend: {
      type: "bar",
      datasets: [{ label: "backend calls", data: series.backend_calls, backgroundColor: colors.amber }].concat(
        series.seconds_saved
          ? [line("backend time saved (s)", series.seconds_saved, colors.green, { type: "line", yAxisID: "saved" })]
          : []
      ),
      y: { beginAtZero: true, ticks: { precision: 0 } },
      extraScales: series.seconds_saved
        ? { saved: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } } }
        : {},
    },
    latency: {
      type: "line",
      datasets: [
        line("hits (ms)", series.hit_ms, colors.green),
        line("misses (ms)", series.miss_ms, colors.red),
      ],
      y: { beginAtZero: true },
    },
  };

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    const chart = charts[canvas.dataset.chart];
    new Chart(canvas, {
      type: chart.type,
      data: { labels: series.labels, datasets: chart.datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: Object.assign({ x: { ticks: { maxTicksLimit: 12 } }, y: chart.y }, chart.extraScales || {}),
        plugins: { legend: { position: "bottom" } },
      },
    });
  });
})();
