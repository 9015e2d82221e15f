"""Snakemake adapter: the val/test samples of a range of raw shards -> one held-out shard
and its index (gpic.jobs.pack_heldout)."""

from pathlib import Path

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.jobs import pack_heldout  # noqa: E402

w = snakemake.wildcards
pack_heldout(w.split, w.bucket, Path("results"), snakemake.params.config, snakemake.output.tar, snakemake.output.index)
