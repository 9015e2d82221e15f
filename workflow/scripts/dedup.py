"""Snakemake adapter: every shard's embed table -> global dedup decisions (gpic.dedup)."""

from pathlib import Path

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.dedup import dedup_corpus  # noqa: E402

embed = {Path(p).stem: p for p in snakemake.input.embed}
slices = {Path(p).stem: p for p in snakemake.output.shards}
dedup_corpus(embed, snakemake.params.dedup, snakemake.output.decisions, slices)
