rule report:
    """The run report (funnel, corpus plots, kept and dropped samples, cost at target
    scale) and the cost figures as JSON; last, so every job's benchmark file is there.
    """
    input:
        stamps("provenance"),
        path(R.checksums),
        path(R.reference),
    output:
        page=report(
            path(R.report),
            caption="../report/run.rst",
            category="Run report",
        ),
        cost=path(R.cost),
    log:
        path(R.log("report", "report")),
    benchmark:
        path(R.benchmark("report", "report"))
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        # Only the sections the report and cost figures read: another change reruns nothing here.
        config=report_settings(config),
    script:
        "../scripts/report.py"
