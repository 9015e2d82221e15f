"""Snakemake adapter: a block's stage tables -> the final state of every key (gpic.jobs.provenance)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.jobs import provenance  # noqa: E402
from gpic.layout import Layout  # noqa: E402

provenance(snakemake.wildcards.block, Layout().root, snakemake.params.config, snakemake.output.stamp)
