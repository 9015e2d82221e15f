rule dedup:
    """Global clusters of duplicates over every shard; writes one slice of decisions per
    shard beside the global table for the caption and provenance jobs."""
    input:
        stamps("assess"),
    output:
        decisions="results/dedup/decisions.parquet",
    log:
        "results/logs/dedup/dedup.log",
    benchmark:
        "results/benchmarks/dedup/dedup.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=32000,
        runtime=240,
    params:
        dedup=config["dedup"],
        shards=config["shards"],
    script:
        "../scripts/dedup.py"
