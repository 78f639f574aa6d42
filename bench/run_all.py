"""Run every benchmark in turn (`make bench`) and assemble bench/RESULTS.md from their reports.

Each benchmark is a script of its own that starts its own servers, prints its tables and writes
bench/results/<name>.md (and its plot, bench/results/<name>.png); this runs them one after
another with settings that fit about eight minutes on a 2-core machine, times each, and joins
their reports under one header naming the date, the machine and the command. A benchmark that
fails is reported as failed (its older report is left out) and the run exits non-zero.

    .venv/bin/python bench/run_all.py [--quick] [--only hit_path,zipf]

--quick runs each benchmark for a moment: it checks that the harness works end to end, and its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402

RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Benchmark:
    name: str  # bench/<name>.py, writing bench/results/<name>.md
    arguments: tuple[str, ...]  # the full run's
    quick: tuple[str, ...]  # --quick's


BENCHMARKS = (
    # The script's defaults (hit vs the floor in 12 turns of 1.5 s per connection count, 300 MISSes
    # per model) but the sampling A/B's turns: 3 of 3 s, not 5 s: about 3 minutes instead of 4.
    Benchmark(
        "hit_path",
        ("--turns", "12", "--turn-seconds", "1.5", "--ab-rounds", "3", "--seconds", "3", "--misses", "300"),
        ("--turns", "2", "--turn-seconds", "0.3", "--ab-rounds", "1", "--seconds", "0.3", "--misses", "20"),
    ),
    Benchmark("batch", ("--seconds", "5"), ("--seconds", "0.3")),
    Benchmark("zipf", ("--requests", "1000"), ("--requests", "60", "--model-ms", "5")),
    Benchmark("stampede", ("--rounds", "3"), ("--rounds", "1", "--model-ms", "30")),
    Benchmark("memory", ("--entries", "500"), ("--entries", "50")),
    Benchmark("warm", ("--seconds", "2"), ("--seconds", "0.3")),
    Benchmark(
        "l1",
        ("--turns", "8", "--turn-seconds", "1.5", "--purges", "200"),
        ("--turns", "1", "--turn-seconds", "0.3", "--purges", "10"),
    ),
)


@dataclass(frozen=True)
class Outcome:
    benchmark: Benchmark
    command: str
    seconds: float
    returncode: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a moment each: checks the harness only")
    parser.add_argument("--only", default="", help="these benchmarks alone, comma-separated")
    args = parser.parse_args()
    names = [benchmark.name for benchmark in BENCHMARKS]
    unknown = set(args.only.split(",")) - set(names) if args.only else set()
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only.split(",")]
    started = time.perf_counter()
    outcomes = []
    for benchmark in chosen:
        arguments = benchmark.quick if args.quick else benchmark.arguments
        command = [sys.executable, f"bench/{benchmark.name}.py", *arguments]
        shown = " ".join([f"bench/{benchmark.name}.py", *arguments])
        print(f"\n=== {shown}", flush=True)
        began = time.perf_counter()
        returncode = subprocess.run(command, cwd=REPO).returncode
        outcomes.append(Outcome(benchmark, shown, time.perf_counter() - began, returncode))
        print(
            f"=== {benchmark.name}: {time.perf_counter() - began:.0f} s, exit code {returncode}", flush=True
        )
    total = time.perf_counter() - started
    text = assemble(outcomes, total, args)
    (REPO / "bench" / "RESULTS.md").write_text(text)
    print(f"\nwrote bench/RESULTS.md; {len(outcomes)} benchmarks in {total / 60:.1f} minutes")
    if any(outcome.returncode for outcome in outcomes):
        sys.exit(1)


def assemble(outcomes: list[Outcome], total: float, args: argparse.Namespace) -> str:
    """RESULTS.md: the header, the time each benchmark took, then each one's report."""
    invoked = f"`{' '.join(['bench/run_all.py', *sys.argv[1:]])}`"
    if "MAKELEVEL" in os.environ:  # make sets it for the commands it runs
        invoked = f"`make bench`, which runs {invoked}"
    lines = [
        "# Benchmark results",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {machine.description()}",
        f"- command: {invoked}, {total / 60:.1f} minutes end to end",
        "- every number below was measured by the script that printed it, in this run; the"
        " servers, Redis and the load clients share the machine's cores",
    ]
    if args.quick:
        lines.append("- **--quick: a moment per benchmark, to check the harness; the numbers mean nothing**")
    lines += [
        "",
        "| benchmark | command | seconds | result |",
        "|---|---|---|---|",
        *(
            f"| [{o.benchmark.name}](#{anchor(o)}) | `{o.command}` | {o.seconds:.0f} | "
            f"{'ok' if o.returncode == 0 else f'**FAILED** (exit code {o.returncode})'} |"
            for o in outcomes
        ),
    ]
    for outcome in outcomes:
        lines.append("")
        if outcome.returncode:
            lines += [f"## {outcome.benchmark.name}", "", f"**FAILED** (exit code {outcome.returncode})."]
            continue
        report = (RESULTS / f"{outcome.benchmark.name}.md").read_text()
        lines.append(rebase(report).rstrip())
    return "\n".join(lines) + "\n"


def anchor(outcome: Outcome) -> str:
    """The GitHub anchor of the report's first heading, or of the failure's."""
    if outcome.returncode:
        title = outcome.benchmark.name
    else:
        title = (RESULTS / f"{outcome.benchmark.name}.md").read_text().splitlines()[0].lstrip("# ")
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def rebase(report: str) -> str:
    """One report as a section of RESULTS.md: headings one level down, images linked from bench/."""
    report = re.sub(r"^(#+) ", r"#\1 ", report, flags=re.MULTILINE)
    return re.sub(r"\]\(([\w.-]+\.png)\)", r"](results/\1)", report)


if __name__ == "__main__":
    main()
