"""Snakemake adapter: a finished run -> the run report and its cost figures
(gpic.review.report, gpic.review.cost)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.layout import Layout  # noqa: E402
from gpic.review.cost import estimate  # noqa: E402
from gpic.review.report import write_report  # noqa: E402
from gpic.store import write_json  # noqa: E402

layout = Layout()
write_json(estimate(layout.root, snakemake.params.config), snakemake.output.cost)
write_report(layout.root, snakemake.params.config, snakemake.output.page)
