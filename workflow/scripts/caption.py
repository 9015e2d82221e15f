"""Snakemake adapter: a block's kept images -> caption tables and packed train shards (gpic.jobs.caption),
and the digest of its held-out samples that the val/test packing depends on."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.jobs import caption  # noqa: E402
from gpic.layout import Layout  # noqa: E402
from gpic.stages.pack import write_heldout_digest  # noqa: E402

torch.set_num_threads(snakemake.threads)
caption(snakemake.wildcards.block, Layout().root, snakemake.params.config, snakemake.output.stamp)
write_heldout_digest(Layout(), snakemake.wildcards.block, snakemake.output.heldout)
