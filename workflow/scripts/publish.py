"""Snakemake adapter: packed shards -> dataset card and checksums (gpic.publish)."""

from pathlib import Path

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.publish import write_card  # noqa: E402

config = {"shards": snakemake.params.shards, "tiers": snakemake.params.tiers, "publish": snakemake.params.publish}
write_card(Path(snakemake.output.card).parent, config, snakemake.output.card, snakemake.output.sums)
