"""Snakemake adapter: filter survivors -> VLM verdicts (gpic.judge)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.judge import judge_shard  # noqa: E402
from gpic.store import read_table  # noqa: E402

torch.set_num_threads(snakemake.threads)
judge_shard(read_table(snakemake.input.filter), read_table(snakemake.input.records), snakemake.input.raw,
            snakemake.params.judge, snakemake.output.table)
