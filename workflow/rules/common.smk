# Shard lists, wildcard constraints and input helpers shared by every stage.
# Shard lists come from config at parse time (no checkpoints: they are slow at 8,000 shards).

from gpic.keys import bucket_of, shard_name

SHARDS = [shard_name(i) for i in range(config["shards"])]
BUCKETS = {
    split: [shard_name(j) for j in range(config["splits"][f"{split}_shards"])]
    for split in ("val", "test")
}


wildcard_constraints:
    shard=r"\d{5}",
    bucket=r"\d{5}",
    split="val|test",


def all_outputs():
    """Everything a full build produces: provenance per shard and the published card."""
    return expand("results/provenance/{shard}.parquet", shard=SHARDS) + [
        "results/packed/README.md",
        "results/packed/SHA256SUMS",
    ]


def bucket_members(split, bucket):
    """Raw shards whose `split` samples are gathered into this val/test bucket (fan-in)."""
    n = config["splits"][f"{split}_shards"]
    return [s for s in SHARDS if bucket_of(int(s), n) == int(bucket)]


def pack_fan_in(wildcards):
    """Per-stage files of every raw shard gathered into one val/test shard."""
    shards = bucket_members(wildcards.split, wildcards.bucket)
    return {
        stage: expand(f"results/{stage}/{{shard}}.{ext}", shard=shards)
        for stage, ext in PACK_STAGES.items()
    }


PACK_STAGES = {
    "manifests": "parquet",
    "fetch": "parquet",
    "filter": "parquet",
    "captions": "parquet",
    "raw": "tar",
}


def packed_indexes(wildcards):
    """Indexes of the packed shards that samples of this raw shard can land in."""
    shard = int(wildcards.shard)
    indexes = [f"results/packed/train/gpic_train_{wildcards.shard}.parquet"]
    for split, buckets in BUCKETS.items():
        bucket = shard_name(bucket_of(shard, len(buckets)))
        indexes.append(f"results/packed/{split}/gpic_{split}_{bucket}.parquet")
    return indexes


def all_packed():
    """Every packed tar and its index."""
    tars = expand(
        "results/packed/train/gpic_train_{shard}.{ext}",
        shard=SHARDS,
        ext=["tar", "parquet"],
    )
    for split, buckets in BUCKETS.items():
        tars += expand(
            f"results/packed/{split}/gpic_{split}_{{bucket}}.{{ext}}",
            bucket=buckets,
            ext=["tar", "parquet"],
        )
    return tars


def on_gpu(stage):
    """GPUs a model stage asks for: one when its configured device is CUDA, else none."""
    return 1 if config[stage]["device"].startswith("cuda") else 0


def model_threads(stage):
    """CPU threads of a model stage: data loading for a GPU, one thread on a CPU (torch
    with two threads on a shared two-core machine ran many times slower)."""
    return 8 if on_gpu(stage) else 1
