"""Snakemake adapter: dedup survivors -> four caption levels (gpic.caption)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.caption import caption_shard  # noqa: E402
from gpic.store import read_table  # noqa: E402

torch.set_num_threads(snakemake.threads)
caption_shard(read_table(snakemake.input.dedup), read_table(snakemake.input.records), snakemake.input.raw,
              snakemake.params.caption, snakemake.output.table)
