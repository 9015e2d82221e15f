rule filter:
    """Safe decode and heuristic quality scores; every drop keeps its reason."""
    input:
        raw="results/raw/{shard}.tar",
        records="results/fetch/{shard}.parquet",
    output:
        table="results/filter/{shard}.parquet",
    log:
        "results/logs/filter/{shard}.log",
    benchmark:
        "results/benchmarks/filter/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        filter=config["filter"],
    script:
        "../scripts/filter.py"
