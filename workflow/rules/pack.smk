rule pack_train:
    """Train shard i is packed from raw shard i."""
    input:
        manifests="results/manifests/{shard}.parquet",
        fetch="results/fetch/{shard}.parquet",
        filter="results/filter/{shard}.parquet",
        captions="results/captions/{shard}.parquet",
        raw="results/raw/{shard}.tar",
    output:
        tar="results/packed/train/gpic_train_{shard}.tar",
        index="results/packed/train/gpic_train_{shard}.parquet",
    log:
        "results/logs/pack/train_{shard}.log",
    benchmark:
        "results/benchmarks/pack/train_{shard}.tsv"
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        split="train",
        shards=config["shards"],
        tiers=config["tiers"],
    script:
        "../scripts/pack.py"


rule pack_heldout:
    """Validation and test shards gather their samples from a bucket of raw shards."""
    input:
        unpack(pack_fan_in),
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
        mem_mb=4000,
        runtime=60,
    params:
        shards=config["shards"],
        tiers=config["tiers"],
    script:
        "../scripts/pack.py"
