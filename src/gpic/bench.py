"""Shared shape of every `gpic bench NAME`: ours and the baseline timed in one run on the same
inputs, ending with one line of key=value figures (`ratio=` is ours over the baseline, higher
is better; seconds as `*_s=`), so results can be grepped and compared across machines."""

from __future__ import annotations

import io
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import skimage.data
import yaml
from PIL import Image

from gpic.caption import LEVELS
from gpic.pack import ShardInputs, pack
from gpic.store import read_tar, write_table, write_tar

REPO = Path(__file__).resolve().parents[2]


def best_of(fn: Callable[[], object], repeat: int = 3, setup: Callable[[], object] | None = None) -> float:
    """Fastest wall time of `repeat` calls, in seconds (the least disturbed by other load);
    `setup` runs untimed before each call (e.g. to remove the previous call's output)."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def figures_line(figures: dict[str, float | int | str]) -> str:
    """The closing `key=value` line; floats with four significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())


def synthetic_shard(out_dir: Path, n: int, seed: int = 0) -> ShardInputs:
    """A shard's pack inputs on disk: n JPEGs of GPIC's mean size (479x587) cut from real
    photos, and the manifest, fetch, filter and caption tables that pack joins."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")]
    out_dir.mkdir(parents=True, exist_ok=True)
    members, rows = [], []
    for i in range(n):
        photo = photos[i % len(photos)]
        left, top = int(rng.integers(0, photo.width // 4)), int(rng.integers(0, photo.height // 4))
        image = photo.crop((left, top, left + photo.width * 3 // 4, top + photo.height * 3 // 4)).resize((479, 587))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=90)
        key = f"{i:020x}"
        members.append((f"{key}.jpg", buffer.getvalue()))
        rows.append({"key": key, "split": "train", "source": "wikimedia", "source_id": str(i),
                     "url": f"https://example.org/{i}.jpg", "license": "CC BY 4.0", "license_url": "",
                     "attribution": "Photographer", "title": f"Photo {i}",
                     "retrieved_at": "2026-01-01T00:00:00+00:00", "sha256": "0" * 64,
                     "raw_member": f"{key}.jpg", "fetched_at": "2026-01-01T00:00:00+00:00", "license_id": "CC-BY-4.0",
                     "width": 479, "height": 587, "caption_status": "ok", "caption_model_id": "m",
                     "caption_model_revision": "r", **{level: f"{level} caption of photo {i}" for level in LEVELS}})
    table = pd.DataFrame(rows)
    paths = ShardInputs(*(str(out_dir / f"{name}.parquet") for name in ("manifest", "fetch", "filter", "captions")),
                        raw=str(out_dir / "raw.tar"))
    write_table(table[["key", "split", "source", "source_id", "url", "license", "license_url", "attribution", "title",
                       "retrieved_at"]], paths.manifest)
    write_table(table[["key", "sha256", "raw_member", "fetched_at", "license_id"]], paths.fetch)
    write_table(table[["key", "width", "height"]], paths.filter)
    write_table(table[["key", "caption_status", "caption_model_id", "caption_model_revision", *LEVELS]], paths.captions)
    write_tar(paths.raw, members)
    return paths


def bench_pack(n: int = 500, repeat: int = 3) -> dict[str, float | int]:
    """MB/s of our pack (joins, records, offsets, index) against copying the same images and
    the JSON records into a tar with the standard library."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = synthetic_shard(tmp / "shard", n)
        def clean() -> None:  # replacing an existing 30 MB file costs more than writing it
            for name in ("ours.tar", "ours.parquet", "plain.tar"):
                (tmp / name).unlink(missing_ok=True)

        ours_s = best_of(lambda: pack([inputs], "train", "full", tmp / "ours.tar", tmp / "ours.parquet"), repeat, clean)
        members = read_tar(tmp / "ours.tar")

        def plain_copy() -> None:
            raw = tarfile.open(inputs.raw)
            with tarfile.open(tmp / "plain.tar", "w") as out:
                for info in raw:
                    out.addfile(info, raw.extractfile(info))
                    record = members[info.name.replace(".jpg", ".json")]
                    meta = tarfile.TarInfo(info.name.replace(".jpg", ".json"))
                    meta.size = len(record)
                    out.addfile(meta, io.BytesIO(record))
            raw.close()

        baseline_s = best_of(plain_copy, repeat, clean)
        megabytes = sum(len(data) for data in members.values()) / 1e6
    return {"samples": n, "mb": round(megabytes, 1), "ours_mb_per_s": megabytes / ours_s,
            "baseline_mb_per_s": megabytes / baseline_s, "ours_s": ours_s, "baseline_s": baseline_s,
            "ratio": baseline_s / ours_s}


def _dag_config(work: Path, shards: int, per_job: int) -> Path:
    """The demo config scaled to `shards` (held-out shards in GPIC's proportions)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    (work / "source.csv").write_text("source,source_id,url,license,license_url,attribution,title\n")
    config.update(shards=shards, shards_per_job=per_job, sources=[str(work / "source.csv")])
    config["splits"].update(val_shards=max(1, shards // 500), test_shards=max(1, shards // 100))
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _build_everything(work: Path, shards: int, per_job: int, val_shards: int, test_shards: int) -> list[Path]:
    """Empty files standing for every output of a finished run, older stages older, and
    Snakemake's metadata for them; returns the caption stamps (the last per-block GPU outputs)."""
    from gpic.jobs import block_names

    blocks = block_names(shards, per_job)
    stages = [["results/manifests/partition.json"],
              *([f"results/done/{stage}/{b}.json" for b in blocks] for stage in ("prepare", "assess")),
              ["results/dedup/decisions.parquet"],
              [f"results/done/caption/{b}.json" for b in blocks],
              [f"results/packed/{split}/gpic_{split}_{i:05d}.{ext}" for split, n in (("val", val_shards), ("test", test_shards))
               for i in range(n) for ext in ("tar", "parquet")],
              [f"results/done/provenance/{b}.json" for b in blocks]
              + ["results/packed/README.md", "results/packed/SHA256SUMS", "results/eval/fd_dinov2_test.npz"]]
    now = time.time() - 3600
    os.utime(work / "source.csv", (now - 60, now - 60))
    for age, names in enumerate(stages):
        for name in names:
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path, (now + 60 * age, now + 60 * age))
    _snakemake(work, "--touch", "--cores", "1")  # records the metadata a real run leaves
    return [work / name for name in stages[4]]


def _snakemake(work: Path, *args: str) -> str:
    command = [str(Path(sys.executable).parent / "snakemake"), *args, "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--configfile", str(work / "config.yaml")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=work)
    if run.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {work}:\n{run.stderr[-2000:]}")
    return run.stdout


def _dry_run(work: Path) -> tuple[float, int]:
    """Seconds of `snakemake -n --quiet rules` on the repository's workflow, and jobs pending."""
    start = time.perf_counter()
    out = _snakemake(work, "-n", "--quiet", "rules")
    totals = re.findall(r"^total\s+(\d+)", out, re.MULTILINE)
    return time.perf_counter() - start, int(totals[-1]) if totals else 0


def bench_dag(shards: int = 8000, per_job: int = 10, baseline_per_job: int = 1) -> dict[str, float | int]:
    """Dry-run seconds at `shards` with nothing built, everything built and 1% of the caption
    blocks missing, for our block size and for one job per shard (the baseline)."""
    figures: dict[str, float | int] = {"shards": shards}
    for label, size in (("ours", per_job), ("baseline", baseline_per_job)):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            config = yaml.safe_load(_dag_config(work, shards, size).read_text())
            seconds, jobs = _dry_run(work)
            figures.update({f"{label}_jobs": jobs, f"{label}_empty_s": seconds})
            captions = _build_everything(work, shards, size, config["splits"]["val_shards"],
                                         config["splits"]["test_shards"])
            figures[f"{label}_built_s"], _ = _dry_run(work)
            for stamp in captions[::100]:  # 1% of the blocks lost their caption output
                stamp.unlink()
            figures[f"{label}_stale_s"], figures[f"{label}_stale_jobs"] = _dry_run(work)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    figures["ratio"] = figures["baseline_empty_s"] / figures["ours_empty_s"]
    return figures
