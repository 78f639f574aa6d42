"""Settings of the benchmark's baseline server: predcache's own settings, a one-view URLconf."""

from predcache_site.settings import *  # noqa: F403

ROOT_URLCONF = "bench.baseline_urls"
