rule pack_heldout:
    """CPU fan-in: validation and test shards gather their samples from a contiguous range
    of raw shards."""
    input:
        heldout_inputs,
    output:
        tar="results/packed/{split}/gpic_{split}_{bucket}.tar",
        index="results/packed/{split}/gpic_{split}_{bucket}.parquet",
    log:
        "results/logs/pack/{split}_{bucket}.log",
    benchmark:
        "results/benchmarks/pack/{split}_{bucket}.tsv"
    conda:
        "../../environment.yml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config={k: config[k] for k in ("splits", "tiers", "shards")},
    script:
        "../scripts/pack.py"
