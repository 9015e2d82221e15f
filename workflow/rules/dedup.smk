rule dedup:
    """Global clusters of duplicates over every shard; writes one slice of decisions per
    shard beside the global table for the caption and provenance jobs, and per block a
    digest of its slices: downstream jobs depend on their block's digest, which keeps its
    checksum (so Snakemake does not rerun them) unless that block's decisions change."""
    input:
        stamps("assess"),
    output:
        decisions=path(R.decisions),
        digests=expand(path(R.block_digest("{block}")), block=BLOCKS),
    log:
        path(R.log("dedup", "dedup")),
    benchmark:
        path(R.benchmark("dedup", "dedup"))
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=32000,
        runtime=240,
    params:
        dedup=config["dedup"],
        shards=config["shards"],
        shards_per_job=PER_JOB,
    script:
        "../scripts/dedup.py"
