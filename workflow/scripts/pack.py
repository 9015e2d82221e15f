"""Snakemake adapter: captioned samples -> a webdataset tar and its index (gpic.pack).
Serves both the train rule (one raw shard) and the val/test fan-in rule (a bucket)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.config import tier_of_shard  # noqa: E402
from gpic.pack import ShardInputs, pack  # noqa: E402


def as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)


files = snakemake.input
columns = [as_list(files[name]) for name in ("manifests", "fetch", "filter", "captions", "raw")]
inputs = [ShardInputs(*paths) for paths in zip(*columns)]
split = snakemake.wildcards.get("split", "train")
shard = int(snakemake.wildcards.get("shard", 0))  # held-out shards belong to every tier, like train shard 0
tier = tier_of_shard(snakemake.params.tiers, snakemake.params.shards, shard)
pack(inputs, split, tier, snakemake.output.tar, snakemake.output.index)
