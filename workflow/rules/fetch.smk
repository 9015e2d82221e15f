rule fetch:
    """Licence gate, then download every admitted URL of a shard into its raw tar."""
    input:
        manifest="results/manifests/{shard}.parquet",
    output:
        raw="results/raw/{shard}.tar",
        records="results/fetch/{shard}.parquet",
    params:
        fetch=config["fetch"],
        licenses=config["licenses"],
    log:
        "results/logs/fetch/{shard}.log",
    benchmark:
        "results/benchmarks/fetch/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../scripts/fetch.py"
