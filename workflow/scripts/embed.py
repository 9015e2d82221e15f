"""Snakemake adapter: judged survivors -> hashes and descriptors (gpic.embed)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.embed import embed_shard  # noqa: E402
from gpic.store import read_table  # noqa: E402

torch.set_num_threads(snakemake.threads)
judge = read_table(snakemake.input.judge)
survivors = judge.loc[judge["judge_verdict"] == "pass", "key"].tolist()
embed_shard(survivors, read_table(snakemake.input.manifest), read_table(snakemake.input.records),
            read_table(snakemake.input.filter), snakemake.input.raw, snakemake.params.embed, snakemake.output.table)
