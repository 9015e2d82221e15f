rule partition:
    """Hash-partition the source manifests into one manifest per raw shard (global); the
    summary is the tracked output, the shard manifests sit beside it."""
    input:
        sources=config["sources"],
    output:
        summary=path(R.partition),
    log:
        path(R.log("partition", "partition")),
    benchmark:
        path(R.benchmark("partition", "partition"))
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
