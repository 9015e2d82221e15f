rule dedup:
    """Global clusters of duplicates over every shard; one slice of decisions per shard."""
    input:
        embed=expand("results/embed/{shard}.parquet", shard=SHARDS),
    output:
        decisions="results/dedup/decisions.parquet",
        shards=expand("results/dedup/{shard}.parquet", shard=SHARDS),
    log:
        "results/logs/dedup/dedup.log",
    benchmark:
        "results/benchmarks/dedup/dedup.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        dedup=config["dedup"],
    script:
        "../scripts/dedup.py"
