"""Snakemake adapter: stage files of a shard -> its provenance (gpic.provenance)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

from gpic.provenance import STAGES, assemble  # noqa: E402

paths = {stage: snakemake.input[stage] for stage in STAGES}
assemble(paths, list(snakemake.input.packed), snakemake.output.table)
