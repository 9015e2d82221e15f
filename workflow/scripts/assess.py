"""Snakemake adapter: a block's filtered shards -> judge and embed tables (gpic.jobs.assess)."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.jobs import assess  # noqa: E402
from gpic.layout import Layout  # noqa: E402

torch.set_num_threads(snakemake.threads)
assess(snakemake.wildcards.block, Layout().root, snakemake.params.config, snakemake.output.stamp)
