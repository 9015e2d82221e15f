rule embed:
    """Exact hash, perceptual hash and copy-detection descriptor of each surviving image."""
    input:
        raw="results/raw/{shard}.tar",
        manifest="results/manifests/{shard}.parquet",
        records="results/fetch/{shard}.parquet",
        filter="results/filter/{shard}.parquet",
        judge="results/judge/{shard}.parquet",
    output:
        table="results/embed/{shard}.parquet",
    log:
        "results/logs/embed/{shard}.log",
    benchmark:
        "results/benchmarks/embed/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: model_threads("embed")
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=on_gpu("embed"),
    params:
        embed=config["embed"],
    script:
        "../scripts/embed.py"
