# Shard blocks, buckets and input helpers shared by every stage.
# Lists come from config at parse time (no checkpoints: they are slow at 8,000 shards). One job
# runs one resource class over a block of `shards_per_job` shards and is tracked by one stamp
# file, which keeps the DAG to a few thousand jobs and files at 8,000 shards (gpic.jobs).
# Every path comes from gpic.layout, the one description of results/.

from gpic.contracts import COLLECTORS
from gpic.config import check_inputs
from gpic.identity import shard_name
from gpic.layout import Layout, block_names, block_shards, bucket_of, bucket_range
from gpic.review.cost import report_settings

R = Layout()
check_inputs(config)
PER_JOB = config["shards_per_job"]
BLOCKS = block_names(config["shards"], PER_JOB)
BUCKETS = {
    split: [shard_name(j) for j in range(config["splits"][f"{split}_shards"])]
    for split in ("val", "test")
}


wildcard_constraints:
    collector="|".join(COLLECTORS),
    block=r"\d{5}-\d{5}",
    bucket=r"\d{5}",
    split="val|test",


def collections():
    """The summaries of the collectors config `collect.collectors` runs (stage 1)."""
    return [path(R.collection_summary(c)) for c in config["collect"]["collectors"]]


def path(p):
    """A layout path as the string Snakemake matches against."""
    return str(p)


def stamps(job, blocks=BLOCKS):
    """The completion stamps of a block job."""
    return [path(R.stamp(job, block)) for block in blocks]


def block_of(shard):
    return BLOCKS[shard // PER_JOB]


def all_outputs():
    """Everything a full build produces: provenance of every block, the published card,
    the FD-DINOv2 reference statistics of the test split and the run report."""
    return stamps("provenance") + [
        path(p) for p in (R.card, R.checksums, R.reference, R.report)
    ]


def heldout(split, ext):
    return [path(R.packed(split, bucket, ext)) for bucket in BUCKETS[split]]


def heldout_inputs(wildcards):
    """Held-out digests of the blocks holding the raw shards this val/test shard gathers: a
    block captioned again with the same val/test samples leaves the shard current."""
    n = len(BUCKETS[wildcards.split])
    shards = bucket_range(int(wildcards.bucket), n, config["shards"])
    return [path(R.heldout_digest(b)) for b in sorted({block_of(s) for s in shards})]


def provenance_inputs(wildcards):
    """A block's final states need its train shards and the held-out shards of its keys."""
    inputs = stamps("caption", [wildcards.block]) + [
        path(R.block_digest(wildcards.block))
    ]
    for split, buckets in BUCKETS.items():
        wanted = {
            bucket_of(int(s), len(buckets), config["shards"])
            for s in block_shards(wildcards.block)
        }
        inputs += [
            path(R.packed(split, shard_name(b), "parquet")) for b in sorted(wanted)
        ]
    return inputs


def on_gpu(stage):
    """GPUs a model stage asks for: one when its configured device is CUDA, else none."""
    return 1 if config[stage]["device"].startswith("cuda") else 0


def model_threads(stage):
    """CPU threads of a model job: data loading for a GPU, one thread on a CPU (torch
    with two threads on a shared two-core machine ran many times slower)."""
    return 8 if on_gpu(stage) else 1
