rule report:
    """The run report (funnel, corpus plots, kept and dropped samples, cost at target
    scale) and the cost figures as JSON; last, so every job's benchmark file is there.
    """
    input:
        stamps("provenance"),
        "results/packed/SHA256SUMS",
        "results/eval/fd_dinov2_test.npz",
    output:
        page="results/report/index.html",
        cost="results/report/cost.json",
    log:
        "results/logs/report/report.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=config,
    script:
        "../scripts/report.py"
