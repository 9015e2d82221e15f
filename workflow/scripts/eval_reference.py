"""Snakemake adapter: the packed test shards -> FD-DINOv2 reference statistics
(gpic.fd.reference_stats); decode threads = the job's threads."""

from gpic.logs import to_log

to_log(snakemake.log[0])

import torch  # noqa: E402

from gpic.fd import reference_stats  # noqa: E402

torch.set_num_threads(snakemake.threads)
reference_stats(list(snakemake.input), snakemake.output[0], snakemake.params.config, workers=snakemake.threads)
