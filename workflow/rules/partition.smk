rule partition:
    """Hash-partition the source manifests into one manifest per raw shard (global)."""
    input:
        sources=config["sources"],
    output:
        manifests=expand("results/manifests/{shard}.parquet", shard=SHARDS),
        summary="results/manifests/partition.json",
    params:
        shards=config["shards"],
        splits=config["splits"],
        allowed_sources=config["allowed_sources"],
    log:
        "results/logs/partition/partition.log",
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/partition.py"
