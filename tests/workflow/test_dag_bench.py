"""`gpic bench dag`'s stale case measures a real rebuild: captioning 1% of the blocks again
reruns their own provenance and the corpus-wide jobs, not the provenance of every block that
shares a held-out bucket with them."""

from __future__ import annotations

import pytest

from gpic.bench.dag import bench_dag


@pytest.mark.slow
def test_a_rebuilt_caption_block_reruns_in_proportion():
    figures = bench_dag(shards=300, per_job=10, baseline_per_job=30)  # 30 blocks, one val bucket over all of them
    assert figures["ours_jobs"] > figures["baseline_jobs"]
    assert figures["ours_stale_blocks"] == 1 and figures["ours_stale_provenance"] == 1
    # its provenance, then publish, report and the default target: no pack_heldout, no other block
    assert figures["ours_stale_jobs"] <= 4
    assert figures["baseline_stale_provenance"] == 1
