rule eval_reference:
    """GPU, global: FD-DINOv2 reference statistics of the held-out test split (README:
    Evaluation); per-shard statistics in results/eval/test/ let a rerun resume.
    """
    input:
        heldout("test", "tar"),
    output:
        "results/eval/fd_dinov2_test.npz",
    log:
        "results/logs/eval/reference.log",
    benchmark:
        "results/benchmarks/eval/reference.tsv"
    conda:
        "../../environment.yml"
    threads: model_threads("eval")
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=on_gpu("eval"),
    params:
        config=config["eval"],
    script:
        "../scripts/eval_reference.py"
