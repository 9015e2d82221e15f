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
              ["results/dedup/decisions.parquet", *(f"results/dedup/blocks/{b}.json" for b in blocks)],
              [f"results/done/caption/{b}.json" for b in blocks],
              [f"results/packed/{split}/gpic_{split}_{i:05d}.{ext}" for split, n in (("val", val_shards), ("test", test_shards))
               for i in range(n) for ext in ("tar", "parquet")],
              [f"results/done/provenance/{b}.json" for b in blocks]
              + ["results/packed/README.md", "results/packed/SHA256SUMS", "results/eval/fd_dinov2_test.npz"],
              ["results/report/index.html", "results/report/cost.json"]]
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
    blocks rebuilt (newer than what depends on them), for our block size and for one job per shard (the baseline)."""
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
            for stamp in captions[::100]:  # 1% of the blocks were captioned again: downstream is stale
                stamp.touch()
            figures[f"{label}_stale_s"], figures[f"{label}_stale_jobs"] = _dry_run(work)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    figures["ratio"] = figures["baseline_empty_s"] / figures["ours_empty_s"]
    return figures


def _serve_files(files: dict[str, bytes], ready) -> None:
    """A minimal asyncio HTTP server for in-memory files (one request per connection, as
    both clients use): python's http.server tops out near 200 requests/s here, which would
    measure the server rather than the clients."""
    import asyncio

    async def handle(reader, writer):
        request = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        parts = request.split()
        data = files.get(parts[1].decode()) if len(parts) > 1 else None
        if data is None:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(data) + data)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        ready.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _serve(files: dict[str, bytes]):
    """Serve `files` from a separate process (not sharing the measured client's GIL)."""
    import multiprocessing

    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_serve_files, args=(files, send), daemon=True)
    process.start()
    if not receive.poll(30):
        process.kill()
        raise RuntimeError("the benchmark's HTTP server did not start")
    return process, f"http://127.0.0.1:{receive.recv()}"


def find_img2dataset(path: str | None) -> Path:
    """The img2dataset executable: given, on PATH, or in the venv `make bench-env` builds
    (its own venv: img2dataset pins pandas and pulls wandb and OpenCV)."""
    import shutil

    for candidate in (path, shutil.which("img2dataset"), REPO / ".venv-img2dataset" / "bin" / "img2dataset"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("img2dataset not found: `make bench-env` installs it into .venv-img2dataset, "
                            "or pass --img2dataset PATH")


def bench_fetch(images: int = 2000, workers: int = 16, img2dataset: str | None = None) -> dict[str, float | int]:
    """Images/s downloading the same URL list of 479x587 JPEGs from a loopback server: our
    fetch stage (licence gate, opt-out check, sha256, raw tar and records) against img2dataset
    (output format files, no resize), each with `workers` threads in one process. The
    baseline's rate is over its own download duration (its start-up excluded, which favours it)."""
    import json

    from gpic.config import validate_config
    from gpic.fetch import fetch_shard

    exe = find_img2dataset(img2dataset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = list(read_tar(synthetic_shard(tmp / "src", min(images, 50)).raw).values())
        urls = [f"/{i:06d}.jpg" for i in range(images)]
        server, base = _serve({url: photos[i % len(photos)] for i, url in enumerate(urls)})
        try:
            manifest = pd.DataFrame({"key": [f"{i:020x}" for i in range(images)], "url": [base + u for u in urls],
                                     "license": "CC BY 4.0", "license_url": "", "attribution": "Photographer",
                                     "contract_error": ""})
            config = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"},
                                      "embed": {"model": "m"}, "caption": {"model": "m"},
                                      "fetch": {"workers": workers, "per_host": workers, "retries": 0,
                                                "allow_private_addresses": True}})
            start = time.perf_counter()
            records = fetch_shard(manifest, config, tmp / "raw.tar", tmp / "fetch.parquet")
            ours_s = time.perf_counter() - start
            ours_ok = int((records["fetch_status"] == "ok").sum())

            (tmp / "urls.txt").write_text("".join(base + u + "\n" for u in urls))
            start = time.perf_counter()
            run = subprocess.run([str(exe), "--url_list", str(tmp / "urls.txt"), "--input_format", "txt",
                                  "--output_format", "files", "--output_folder", str(tmp / "i2d"),
                                  "--resize_mode", "no", "--processes_count", "1", "--thread_count", str(workers),
                                  "--number_sample_per_shard", str(images), "--distributor", "multiprocessing",
                                  "--enable_wandb", "False"], capture_output=True, text=True)
            baseline_wall_s = time.perf_counter() - start
        finally:
            server.kill()
        if run.returncode != 0:
            raise RuntimeError(f"img2dataset failed:\n{run.stderr[-2000:]}")
        stats = [json.loads(p.read_text()) for p in (tmp / "i2d").glob("*_stats.json")]
        baseline_ok = sum(s["successes"] for s in stats)
        baseline_s = sum(s["duration"] for s in stats)
    return {"images": images, "workers": workers, "ours_ok": ours_ok, "baseline_ok": baseline_ok,
            "ours_images_per_s": ours_ok / ours_s, "baseline_images_per_s": baseline_ok / baseline_s,
            "ours_s": ours_s, "baseline_s": baseline_s, "baseline_wall_s": baseline_wall_s,
            "ratio": (ours_ok / ours_s) / (baseline_ok / baseline_s)}


def bench_caption(model_path: str, images: int = 16, batch_size: int = 8, device: str = "cpu",
                  backend: str = "transformers", levels: dict | None = None) -> dict[str, float | int | str]:
    """Captioning images/s and output tokens/s for all four levels on 479x587 photos: ours
    (batches of `batch_size`) against the same model one image at a time (the baseline).
    Output lengths follow the model: the tiny random model usually runs to the token budget."""
    from gpic.caption import LEVELS, caption_batch, load_model
    from gpic.config import validate_config

    cfg = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"}, "embed": {"model": "m"},
                           "caption": {"model": model_path, "device": device, "backend": backend,
                                       **({"levels": levels} if levels else {})}})["caption"]
    model = load_model(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        photos = [Image.open(io.BytesIO(data)).convert("RGB")
                  for data in read_tar(synthetic_shard(Path(tmp), images).raw).values()]
    keys = [f"{i:020x}" for i in range(images)]

    def run(size: int) -> tuple[float, int]:
        start, tokens = time.perf_counter(), 0
        for first in range(0, images, size):
            rows = caption_batch(model, keys[first:first + size], photos[first:first + size], cfg["levels"])
            tokens += sum(row[f"{level}_tokens"] for row in rows for level in LEVELS)
        return time.perf_counter() - start, tokens

    run(min(batch_size, images))  # warm-up: first calls allocate and compile kernels
    ours_s, ours_tokens = run(batch_size)
    baseline_s, baseline_tokens = run(1)
    return {"model": model.model_id, "backend": backend, "device": device, "images": images, "batch_size": batch_size,
            "ours_images_per_s": images / ours_s, "ours_tokens_per_s": ours_tokens / ours_s,
            "baseline_images_per_s": images / baseline_s, "baseline_tokens_per_s": baseline_tokens / baseline_s,
            "ours_s": ours_s, "baseline_s": baseline_s, "ratio": baseline_s / ours_s}
