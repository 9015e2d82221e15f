rule fetch:
    """Licence gate, then download every admitted URL of a shard into its raw tar."""
    input:
        manifest="results/manifests/{shard}.parquet",
    output:
        raw="results/raw/{shard}.tar",
        records="results/fetch/{shard}.parquet",
    log:
        "results/logs/fetch/{shard}.log",
    benchmark:
        "results/benchmarks/fetch/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        fetch=config["fetch"],
        licenses=config["licenses"],
    script:
        "../scripts/fetch.py"
