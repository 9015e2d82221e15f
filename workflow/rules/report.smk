rule report:
    """The run report (funnel, corpus plots, kept and dropped samples, cost at target
    scale) and the cost figures as JSON; last, so every job's benchmark file is there.
    """
    input:
        stamps("provenance"),
        path(R.checksums),
        path(R.reference),
    output:
        page=path(R.report),
        cost=path(R.cost),
    log:
        path(R.log("report", "report")),
    conda:
        "../../environment.yml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=config,
    script:
        "../scripts/report.py"
