"""Snakemake adapter: source manifests -> one manifest per raw shard (gpic.stages.partition)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.collect import part_files  # noqa: E402
from gpic.layout import Layout  # noqa: E402
from gpic.stages import partition  # noqa: E402

params = snakemake.params
collected = [str(p) for summary in snakemake.input.collections for p in part_files(summary)]
config = {"sources": list(snakemake.input.sources) + collected, "shards": params.shards, "splits": params.splits,
          "allowed_sources": params.allowed_sources, "workers": snakemake.threads}
partition.run(Layout(), config)
