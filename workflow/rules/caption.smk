rule caption:
    """GPU, per block: four caption levels for every image dedup kept, then the block's
    train shards are packed (train shard i from raw shard i)."""
    input:
        path(R.stamp("assess", "{block}")),
        path(R.block_digest("{block}")),
    output:
        stamp=path(R.stamp("caption", "{block}")),
        heldout=path(R.heldout_digest("{block}")),
    log:
        path(R.log("caption", "{block}")),
    benchmark:
        path(R.benchmark("caption", "{block}"))
    conda:
        "../envs/gpu.yaml"
    threads: model_threads("caption")
    resources:
        mem_mb=24000,
        runtime=720 * PER_JOB,
        gpu=on_gpu("caption"),
    params:
        config={k: config[k] for k in ("caption", "pack", "tiers", "shards")},
    script:
        "../scripts/caption.py"
