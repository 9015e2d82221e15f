rule collect:
    """Stage 1, per collector: enumerate licensed files from a source's API or dump into
    manifest parts, one per upload-time window or dump chunk (docs/collection.md). In series,
    as the APIs' etiquette asks; a rerun repeats no finished part."""
    output:
        summary=path(R.collection_summary("{collector}")),
    log:
        path(R.log("collect", "{collector}")),
    benchmark:
        path(R.benchmark("collect", "{collector}"))
    conda:
        "../envs/cpu.yaml"
    resources:
        # Pages are written as they arrive: memory is one answer or one dump page.
        mem_mb=2000,
        # Flickr's 3,600 calls per hour cap one key at ~1.8M results an hour (docs/collection.md).
        runtime=7 * 24 * 60,
    params:
        collect=config["collect"],
        allow=config["licenses"]["allow"],
    script:
        "../scripts/collect.py"
