rule caption:
    """GPU, per block: four caption levels for every image dedup kept, then the block's
    train shards are packed (train shard i from raw shard i)."""
    input:
        "results/done/assess/{block}.json",
        "results/dedup/blocks/{block}.json",
    output:
        stamp="results/done/caption/{block}.json",
    log:
        "results/logs/caption/{block}.log",
    benchmark:
        "results/benchmarks/caption/{block}.tsv"
    conda:
        "../../environment.yml"
    threads: model_threads("caption")
    resources:
        mem_mb=24000,
        runtime=720 * PER_JOB,
        gpu=on_gpu("caption"),
    params:
        config={k: config[k] for k in ("caption", "tiers", "shards")},
    script:
        "../scripts/caption.py"
