rule provenance:
    """Final state of every key of a shard: packed, dropped or failed, with stage and reason."""
    input:
        manifests="results/manifests/{shard}.parquet",
        fetch="results/fetch/{shard}.parquet",
        filter="results/filter/{shard}.parquet",
        judge="results/judge/{shard}.parquet",
        embed="results/embed/{shard}.parquet",
        dedup="results/dedup/{shard}.parquet",
        captions="results/captions/{shard}.parquet",
        packed=packed_indexes,
    output:
        table="results/provenance/{shard}.parquet",
    log:
        "results/logs/provenance/{shard}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/provenance.py"
