rule publish:
    """Dataset card with one config per tier, and checksums of every packed file."""
    input:
        packed=all_packed(),
    output:
        card="results/packed/README.md",
        sums="results/packed/SHA256SUMS",
    log:
        "results/logs/publish/publish.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        shards=config["shards"],
        tiers=config["tiers"],
        publish=config["publish"],
    script:
        "../scripts/publish.py"
