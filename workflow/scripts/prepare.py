"""Snakemake adapter: a block's shard manifests -> raw tars, fetch and filter tables (gpic.jobs.prepare)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.jobs import prepare  # noqa: E402
from gpic.layout import Layout  # noqa: E402

prepare(snakemake.wildcards.block, Layout().root, snakemake.params.config, snakemake.output.stamp)
