"""Snakemake adapter: a finished run -> results/report/index.html and cost.json (gpic.report, gpic.cost)."""

from pathlib import Path

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.cost import estimate  # noqa: E402
from gpic.report import write_report  # noqa: E402
from gpic.store import write_json  # noqa: E402

write_json(estimate(Path("results"), snakemake.params.config), snakemake.output.cost)
write_report(Path("results"), snakemake.params.config, snakemake.output.page)
