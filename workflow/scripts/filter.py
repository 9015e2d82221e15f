"""Snakemake adapter: raw tar -> filter verdicts (gpic.filters)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.filters import filter_shard  # noqa: E402
from gpic.store import read_table  # noqa: E402

filter_shard(read_table(snakemake.input.records), snakemake.input.raw, snakemake.params.filter, snakemake.output.table)
