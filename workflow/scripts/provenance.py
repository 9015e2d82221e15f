"""Snakemake adapter: a block's stage files -> the final state of every key (gpic.jobs.provenance)."""

from pathlib import Path

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.jobs import provenance  # noqa: E402

provenance(snakemake.wildcards.block, Path("results"), snakemake.params.config, snakemake.output.stamp)
