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
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60 * PER_JOB,
        # One of the fetching jobs the run allows at once: the SLURM profile caps them
        # (resources: fetch_jobs=N) and fetch.concurrent_jobs divides fetch.host_budget by N.
        fetch_jobs=1,
    params:
        config={k: config[k] for k in ("fetch", "licenses", "filter")},
    script:
        "../scripts/prepare.py"
