"""Every path under `results/`, in one place: the rules (`common.smk`), the block jobs, the
review tools and the benchmarks name files only through this module.

    results/
      collect/{collector}/{part}.parquet,         collect (manifest parts: upload-time windows
        collection.json                           or dump chunks) and their summary
      manifests/{shard}.parquet, partition.json   partition
      raw/{shard}.tar                             fetch (original bytes, kept for audit)
      {fetch,filter,judge,embed}/{shard}.parquet  per-shard stage tables
      dedup/decisions.parquet, {shard}.parquet,   global dedup: all decisions, one slice per
        blocks/{block}.json                       shard, a digest per block of shards
      captions/{shard}.parquet,                   caption, and a digest per block of what its
        heldout/{block}.json                      val/test samples carry
      packed/{split}/gpic_{split}_{NNNNN}.tar     pack (webdataset) + .parquet index per tar
      packed/README.md, SHA256SUMS                publish
      provenance/{shard}.parquet                  final state of every key
      done/{job}/{block}.json                     one stamp per block job (what Snakemake tracks),
                                                  recording the files it wrote (size, sha256)
      eval/fd_dinov2_test.npz, eval/test/         FD-DINOv2 reference statistics (+ per shard);
        fid_inception_test.npz, test_inception/   FID's, from `gpic fd-reference --features inception`
      report/index.html, cost.json                run report and cost figures
      logs/{job}/..., benchmarks/{job}/...        one log and one benchmark file per job

Blocks: one Snakemake job runs one resource class over `shards_per_job` consecutive shards
(named by their first and last shard, `00000-00009`); held-out buckets gather contiguous
ranges of raw shards. Both are pure functions of the config, so the DAG is known at parse
time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gpic.identity import shard_name

RESULTS = Path("results")
JOBS = ("prepare", "assess", "caption", "provenance")  # the block jobs, in pipeline order


def block_names(n_shards: int, per_job: int) -> list[str]:
    """Blocks of consecutive shards, named by their first and last shard: 00000-00009."""
    return [f"{shard_name(first)}-{shard_name(min(first + per_job, n_shards) - 1)}"
            for first in range(0, n_shards, per_job)]


def block_shards(block: str) -> list[str]:
    first, last = (int(part) for part in block.split("-"))
    return [shard_name(i) for i in range(first, last + 1)]


def bucket_range(bucket: int, n_buckets: int, n_shards: int) -> range:
    """Raw shards whose val/test samples a held-out shard gathers: a contiguous range, so a
    bucket depends on a few blocks rather than on every block of the corpus."""
    return range(bucket * n_shards // n_buckets, (bucket + 1) * n_shards // n_buckets)


def bucket_of(shard: int, n_buckets: int, n_shards: int) -> int:
    """The held-out bucket that gathers raw shard `shard` (inverse of bucket_range)."""
    return ((shard + 1) * n_buckets - 1) // n_shards


@dataclass(frozen=True)
class Layout:
    """The results folder. Arguments may be Snakemake wildcards (`"{block}"`): the methods
    only format names."""

    root: Path = RESULTS

    def table(self, stage: str, shard: str) -> Path:
        """A per-shard stage table: manifests, fetch, filter, judge, embed, dedup, captions,
        provenance."""
        return self.root / stage / f"{shard}.parquet"

    def tables(self, stage: str) -> Path:
        return self.root / stage

    def raw(self, shard: str) -> Path:
        return self.root / "raw" / f"{shard}.tar"

    def shard(self, shard: str) -> ShardFiles:
        return ShardFiles(self, shard)

    def collection(self, collector: str) -> Path:
        """A collector's manifest parts (gpic.collect), one parquet file per window or chunk."""
        return self.root / "collect" / collector

    def collection_summary(self, collector: str) -> Path:
        return self.collection(collector) / "collection.json"

    @property
    def partition(self) -> Path:
        return self.root / "manifests" / "partition.json"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def decisions(self) -> Path:
        return self.root / "dedup" / "decisions.parquet"

    def block_digest(self, block: str) -> Path:
        return self.root / "dedup" / "blocks" / f"{block}.json"

    def heldout_digest(self, block: str) -> Path:
        """What a caption block gives the val/test shards (gpic.stages.pack.heldout_digest)."""
        return self.root / "captions" / "heldout" / f"{block}.json"

    def stamps(self, job: str) -> Path:
        return self.root / "done" / job

    def stamp(self, job: str, block: str) -> Path:
        return self.stamps(job) / f"{block}.json"

    @property
    def packed_root(self) -> Path:
        return self.root / "packed"

    def packed(self, split: str, number: str, ext: str = "tar") -> Path:
        return self.packed_root / split / f"gpic_{split}_{number}.{ext}"

    @property
    def card(self) -> Path:
        return self.packed_root / "README.md"

    @property
    def checksums(self) -> Path:
        return self.packed_root / "SHA256SUMS"

    @property
    def reference(self) -> Path:
        return self.root / "eval" / "fd_dinov2_test.npz"

    @property
    def report(self) -> Path:
        return self.root / "report" / "index.html"

    @property
    def cost(self) -> Path:
        return self.root / "report" / "cost.json"

    def log(self, job: str, name: str) -> Path:
        return self.root / "logs" / job / f"{name}.log"

    def benchmarks(self, job: str) -> Path:
        return self.root / "benchmarks" / job

    def benchmark(self, job: str, name: str) -> Path:
        return self.benchmarks(job) / f"{name}.tsv"


@dataclass(frozen=True)
class ShardFiles:
    """Every per-shard file of one raw shard: what a stage's `run` reads and writes."""

    layout: Layout
    shard: str

    def table(self, stage: str) -> Path:
        return self.layout.table(stage, self.shard)

    @property
    def raw(self) -> Path:
        return self.layout.raw(self.shard)

    def packed(self, split: str, number: str) -> tuple[Path, Path]:
        return self.layout.packed(split, number, "tar"), self.layout.packed(split, number, "parquet")

    def written_by(self, job: str) -> list[Path]:
        """The files of this shard that a block job writes: what its stamp records and `gpic
        status` checks (train shard i is packed from raw shard i)."""
        return {"prepare": lambda: [self.raw, self.table("fetch"), self.table("filter")],
                "assess": lambda: [self.table("judge"), self.table("embed")],
                "caption": lambda: [self.table("captions"), *self.packed("train", self.shard)],
                "provenance": lambda: [self.table("provenance")]}[job]()


RESULTS_LAYOUT = Layout()  # the default results folder of the workflow and the commands


def index_path(url: str, out_dir: str | Path | None = None) -> str:
    """Where a tar's parquet index lies: beside it (`x.tar` -> `x.parquet`, where pack writes it
    and the loader and verify look by default) or, with `out_dir`, `out_dir/x.parquet` (the
    cache folder of `gpic index --out`). Works on local paths and fsspec URLs alike."""
    stem = url[:-len(".tar")] if url.endswith(".tar") else url
    if out_dir is None:
        return stem + ".parquet"
    return f"{str(out_dir).rstrip('/')}/{PurePosixPath(stem).name}.parquet"
