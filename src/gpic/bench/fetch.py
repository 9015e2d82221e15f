"""`gpic bench fetch`: our fetch stage against img2dataset on the same URLs from a loopback
server."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

from gpic.bench import REPO, synthetic_shard
from gpic.config import validate_config
from gpic.stages.fetch import fetch_shard
from gpic.store import read_tar


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
    (output format files, no resize, `--disable_all_reencoding`: by default it decodes and
    re-encodes every JPEG, which ours never does), each with `workers` threads in one process.
    The baseline's rate is over its own download duration (its start-up excluded, which
    favours it). `same_bytes` counts URLs whose bytes both kept exactly as served: the two
    did the same work only if it equals `images`."""
    exe = find_img2dataset(img2dataset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = list(read_tar(synthetic_shard(tmp / "src", min(images, 50)).raw).values())
        urls = [f"/{i:06d}.jpg" for i in range(images)]
        served = {url: photos[i % len(photos)] for i, url in enumerate(urls)}
        server, base = _serve(served)
        try:
            keys = [f"{i:020x}" for i in range(images)]
            manifest = pd.DataFrame({"key": keys, "url": [base + u for u in urls],
                                     "license": "CC BY 4.0", "license_url": "", "attribution": "Photographer",
                                     "contract_error": ""})
            config = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"},
                                      "embed": {"model": "m"}, "caption": {"model": "m"},
                                      "fetch": {"workers": workers, "per_host": workers, "retries": 0,
                                                "allow_networks": ["127.0.0.0/8"]}})
            start = time.perf_counter()
            records = fetch_shard(manifest, config, tmp / "raw.tar", tmp / "fetch.parquet")
            ours_s = time.perf_counter() - start
            ours_ok = int((records["fetch_status"] == "ok").sum())
            ours_bytes = dict(zip(records["key"], records["raw_member"].map(read_tar(tmp / "raw.tar").get)))

            (tmp / "urls.txt").write_text("".join(base + u + "\n" for u in urls))
            start = time.perf_counter()
            run = subprocess.run([str(exe), "--url_list", str(tmp / "urls.txt"), "--input_format", "txt",
                                  "--output_format", "files", "--output_folder", str(tmp / "i2d"),
                                  "--resize_mode", "no", "--disable_all_reencoding", "True",
                                  "--processes_count", "1", "--thread_count", str(workers),
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
        baseline_bytes = {json.loads(p.read_text())["url"].removeprefix(base): p.with_suffix(".jpg").read_bytes()
                          for p in (tmp / "i2d").glob("*/*.json") if p.with_suffix(".jpg").exists()}
        same_bytes = sum(ours_bytes.get(key) == baseline_bytes.get(url) == served[url] for key, url in zip(keys, urls))
    return {"images": images, "workers": workers, "ours_ok": ours_ok, "baseline_ok": baseline_ok,
            "same_bytes": same_bytes,
            "ours_images_per_s": ours_ok / ours_s, "baseline_images_per_s": baseline_ok / baseline_s,
            "ours_s": ours_s, "baseline_s": baseline_s, "baseline_wall_s": baseline_wall_s,
            "ratio": (ours_ok / ours_s) / (baseline_ok / baseline_s)}
