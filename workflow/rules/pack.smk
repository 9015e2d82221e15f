rule pack_heldout:
    """CPU fan-in: validation and test shards gather their samples from a contiguous range
    of raw shards."""
    input:
        heldout_inputs,
    output:
        tar=path(R.packed("{split}", "{bucket}", "tar")),
        index=path(R.packed("{split}", "{bucket}", "parquet")),
    log:
        path(R.log("pack", "{split}_{bucket}")),
    benchmark:
        path(R.benchmark("pack", "{split}_{bucket}"))
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config={k: config[k] for k in ("splits", "pack", "tiers", "shards")},
    script:
        "../scripts/pack.py"
