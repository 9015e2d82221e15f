rule publish:
    """Dataset card with one config per tier, and checksums of every packed file."""
    input:
        stamps("caption"),
        heldout("val", "tar"),
        heldout("test", "tar"),
    output:
        card=path(R.card),
        sums=path(R.checksums),
    log:
        path(R.log("publish", "publish")),
    benchmark:
        path(R.benchmark("publish", "publish"))
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        shards=config["shards"],
        tiers=config["tiers"],
        publish=config["publish"],
        pack=config["pack"],
    script:
        "../scripts/publish.py"
