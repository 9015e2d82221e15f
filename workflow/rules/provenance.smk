rule provenance:
    """CPU, per block: the final state of every key (packed, dropped or failed) with its
    stage and reason."""
    input:
        provenance_inputs,
    output:
        stamp=path(R.stamp("provenance", "{block}")),
    log:
        path(R.log("provenance", "{block}")),
    benchmark:
        path(R.benchmark("provenance", "{block}"))
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=4000,
        runtime=10 * PER_JOB,
    params:
        config={k: config[k] for k in ("splits", "shards")},
    script:
        "../scripts/provenance.py"
