"""Snakemake adapter: every shard's embed table -> global dedup decisions, one slice per shard
and one digest per block (gpic.stages.dedup)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.layout import Layout  # noqa: E402
from gpic.stages import dedup  # noqa: E402

params = snakemake.params
dedup.run(Layout(), {"dedup": params.dedup, "shards": params.shards, "shards_per_job": params.shards_per_job})
