"""The `gpic` command: collection (`gpic collect`), tracing (lineage, summary, dropped,
status), the corpus (verify, publish, cost, report, fd), benchmarks (`gpic bench NAME`) and
developer tools (tiny models, demo).
Commands import their modules when run, so `gpic --help` starts without torch."""

from gpic.cli import bench, collect, corpus, dev, tracing  # noqa: F401  (each registers its commands)
from gpic.cli.common import app

__all__ = ["app"]
