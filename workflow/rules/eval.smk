rule eval_reference:
    """GPU, global: FD-DINOv2 reference statistics of the held-out test split
    (docs/evaluation.md); per-shard statistics in results/eval/test/ let a rerun resume.
    """
    input:
        heldout("test", "tar"),
    output:
        path(R.reference),
    log:
        path(R.log("eval", "reference")),
    benchmark:
        path(R.benchmark("eval", "reference"))
    conda:
        "../envs/gpu.yaml"
    threads: model_threads("eval")
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=on_gpu("eval"),
    params:
        config=config["eval"],
    script:
        "../scripts/eval_reference.py"
