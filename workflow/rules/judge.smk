rule judge:
    """VLM quality and safety verdicts for the images that passed the heuristics."""
    input:
        raw="results/raw/{shard}.tar",
        records="results/fetch/{shard}.parquet",
        filter="results/filter/{shard}.parquet",
    output:
        table="results/judge/{shard}.parquet",
    log:
        "results/logs/judge/{shard}.log",
    benchmark:
        "results/benchmarks/judge/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: model_threads("judge")
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=on_gpu("judge"),
    params:
        judge=config["judge"],
    script:
        "../scripts/judge.py"
