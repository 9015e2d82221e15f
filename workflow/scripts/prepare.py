"""Snakemake adapter: a block's shard manifests -> raw tars, fetch and filter tables (gpic.jobs.prepare)."""

from pathlib import Path

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.jobs import prepare  # noqa: E402

prepare(snakemake.wildcards.block, Path("results"), snakemake.params.config, snakemake.output.stamp)
