rule prepare:
    """CPU, per block: licence gate and download (fetch), then safe decode and heuristic
    quality scores (filter); every drop keeps its reason."""
    input:
        "results/manifests/partition.json",
    output:
        stamp="results/done/prepare/{block}.json",
    log:
        "results/logs/prepare/{block}.log",
    benchmark:
        "results/benchmarks/prepare/{block}.tsv"
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
