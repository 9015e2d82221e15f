"""Snakemake adapter: shard manifest -> raw tar + fetch records (gpic.fetch)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.fetch import fetch_shard  # noqa: E402
from gpic.store import read_table  # noqa: E402

config = {"fetch": snakemake.params.fetch, "licenses": snakemake.params.licenses}
fetch_shard(read_table(snakemake.input.manifest), config, snakemake.output.raw, snakemake.output.records)
