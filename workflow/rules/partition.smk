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
    # Keying processes: reading and spreading rows in the main one (~10 us a row) is the pace,
    # each keying process does ~10 us a row, so four keep up with room to spare.
    threads: 4
    resources:
        # Streams: 0.4-0.45 GB peak at 1M rows and 8,000 shards, 0.73 GB with 500k-row buckets
        # (110M rows give ~430k); the ceiling is two 256 MiB buckets plus a batch, whatever N is.
        # While keying, ~0.25 GB per keying process and up to two batches each in flight.
        mem_mb=3000,
        runtime=180,  # 110M rows: ~0.5 h with four keying processes, 1.6 h in one on a busy machine
    params:
        shards=config["shards"],
        splits=config["splits"],
        allowed_sources=config["allowed_sources"],
    script:
        "../scripts/partition.py"
