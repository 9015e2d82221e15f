"""Snakemake adapter: a block's kept images -> caption tables and packed train shards (gpic.jobs.caption)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.jobs import caption  # noqa: E402
from gpic.layout import Layout  # noqa: E402

torch.set_num_threads(snakemake.threads)
caption(snakemake.wildcards.block, Layout().root, snakemake.params.config, snakemake.output.stamp)
