"""Snakemake adapter: one collector's parts -> manifest parts and their summary (gpic.collect)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from pathlib import Path  # noqa: E402

from gpic import collect  # noqa: E402

out = Path(snakemake.output.summary).parent
collect.collect(snakemake.wildcards.collector, snakemake.params.collect, out, allow=snakemake.params.allow)
