"""Snakemake adapter: the val/test samples of a range of raw shards -> one held-out shard and
its index (gpic.stages.pack.gather)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.layout import Layout  # noqa: E402
from gpic.stages import pack  # noqa: E402

pack.gather(Layout(), snakemake.params.config, snakemake.wildcards.split, snakemake.wildcards.bucket)
