rule assess:
    """GPU, per block: VLM quality and safety verdicts (judge), then sha256, perceptual hash
    and copy-detection descriptor of every survivor (embed); models load once per block.
    """
    input:
        "results/done/prepare/{block}.json",
    output:
        stamp="results/done/assess/{block}.json",
    log:
        "results/logs/assess/{block}.log",
    benchmark:
        "results/benchmarks/assess/{block}.tsv"
    conda:
        "../../environment.yml"
    threads: model_threads("judge")
    resources:
        mem_mb=24000,
        runtime=120 * PER_JOB,
        gpu=on_gpu("judge"),
    params:
        config={k: config[k] for k in ("judge", "embed")},
    script:
        "../scripts/assess.py"
