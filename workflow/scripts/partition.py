"""Snakemake adapter: source manifests -> shard manifests (gpic.manifest.partition)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.manifest import partition  # noqa: E402

config = {"shards": snakemake.params.shards, "splits": snakemake.params.splits,
          "allowed_sources": snakemake.params.allowed_sources}
partition(list(snakemake.input.sources), config, out_dir=snakemake.output.summary.rsplit("/", 1)[0])
