rule partition:
    """Hash-partition the source manifests and the collected parts into one manifest per raw
    shard (global); the summary is the tracked output, the shard manifests sit beside it.
    """
    input:
        sources=config["sources"],
        collections=collections(),
    output:
        summary=path(R.partition),
    log:
        path(R.log("partition", "partition")),
    benchmark:
        path(R.benchmark("partition", "partition"))
    conda:
        "../envs/cpu.yaml"
    # The main process reads and spreads rows; four keying processes keep up with it
    # (docs/cluster.md, "Scale").
    threads: 4
    resources:
        # Streams: memory is bounded by two buckets and a batch per keying process, whatever
        # the row count; measured figures in docs/cluster.md.
        mem_mb=3000,
        runtime=180,
    params:
        shards=config["shards"],
        splits=config["splits"],
        allowed_sources=config["allowed_sources"],
    script:
        "../scripts/partition.py"
