"""Snakemake adapter: every shard's embed table -> global dedup decisions and one slice per
shard (gpic.dedup)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.dedup import dedup_corpus  # noqa: E402
from gpic.jobs import block_names, block_shards  # noqa: E402
from gpic.keys import shard_name  # noqa: E402

shards = [shard_name(i) for i in range(snakemake.params.shards)]
blocks = block_names(snakemake.params.shards, snakemake.params.shards_per_job)
dedup_corpus({s: f"results/embed/{s}.parquet" for s in shards}, snakemake.params.dedup,
             snakemake.output.decisions, {s: f"results/dedup/{s}.parquet" for s in shards},
             {f"results/dedup/blocks/{b}.json": block_shards(b) for b in blocks})
