rule prepare:
    """CPU, per block: licence gate and download (fetch), then safe decode and heuristic
    quality scores (filter); every drop keeps its reason."""
    input:
        path(R.partition),
    output:
        stamp=path(R.stamp("prepare", "{block}")),
    log:
        path(R.log("prepare", "{block}")),
    benchmark:
        path(R.benchmark("prepare", "{block}"))
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60 * PER_JOB,
    params:
        config={k: config[k] for k in ("fetch", "licenses", "filter")},
    script:
        "../scripts/prepare.py"
