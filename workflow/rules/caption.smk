rule caption:
    """Four caption levels for every image that dedup kept."""
    input:
        raw="results/raw/{shard}.tar",
        records="results/fetch/{shard}.parquet",
        dedup="results/dedup/{shard}.parquet",
    output:
        table="results/captions/{shard}.parquet",
    log:
        "results/logs/caption/{shard}.log",
    benchmark:
        "results/benchmarks/caption/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: model_threads("caption")
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=on_gpu("caption"),
    params:
        caption=config["caption"],
    script:
        "../scripts/caption.py"
