"""Snakemake adapter: packed shards -> dataset card and checksums (gpic.stages.publish)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.layout import Layout  # noqa: E402
from gpic.stages import publish  # noqa: E402

params = snakemake.params
publish.run(Layout(), {"shards": params.shards, "tiers": params.tiers, "publish": params.publish, "pack": params.pack})
