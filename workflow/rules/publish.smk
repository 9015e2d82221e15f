rule publish:
    """Dataset card with one config per tier, and checksums of every packed file."""
    input:
        packed=all_packed(),
    output:
        card="results/packed/README.md",
        sums="results/packed/SHA256SUMS",
    params:
        shards=config["shards"],
        tiers=config["tiers"],
        publish=config["publish"],
    log:
        "results/logs/publish/publish.log",
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/publish.py"
