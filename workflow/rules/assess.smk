rule assess:
    """GPU, per block: VLM quality and safety verdicts (judge), then sha256, perceptual hash
    and copy-detection descriptor of every survivor (embed); models load once per block.
    """
    input:
        path(R.stamp("prepare", "{block}")),
    output:
        stamp=path(R.stamp("assess", "{block}")),
    log:
        path(R.log("assess", "{block}")),
    benchmark:
        path(R.benchmark("assess", "{block}"))
    conda:
        "../envs/gpu.yaml"
    threads: model_threads("judge")
    resources:
        mem_mb=24000,
        runtime=120 * PER_JOB,
        gpu=on_gpu("judge"),
    params:
        config={k: config[k] for k in ("judge", "embed")},
    script:
        "../scripts/assess.py"
