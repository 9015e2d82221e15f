rule partition:
    """Hash-partition the source manifests into one manifest per raw shard (global)."""
    input:
        sources=config["sources"],
    output:
        manifests=expand("results/manifests/{shard}.parquet", shard=SHARDS),
        summary="results/manifests/partition.json",
    log:
        "results/logs/partition/partition.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        shards=config["shards"],
        splits=config["splits"],
        allowed_sources=config["allowed_sources"],
    script:
        "../scripts/partition.py"
