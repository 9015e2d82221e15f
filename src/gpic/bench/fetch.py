"""`gpic bench fetch`: our fetch stage against img2dataset on the same URLs from a loopback
server, over plain HTTP or (`--tls`) HTTPS with a certificate made for the run, optionally
behind an emulated network round trip."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gpic.bench import REPO, synthetic_shard
from gpic.config import validate_config
from gpic.stages.fetch import fetch_shard
from gpic.store import read_tar

LOOPBACK_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@dataclass(frozen=True)
class Certificates:
    """A certificate authority made for one run and a server certificate it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path, names: tuple[str, ...] = (*LOOPBACK_HOSTS, "localhost")) -> Certificates:
    """A fresh CA (ECDSA P-256, made by trustme) and a server certificate it signed for `names`
    (IP addresses or DNS names), written as PEM files for servers and for fetch.ca_bundle."""
    import trustme  # the benchmark's and the tests' dependency only

    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(key_type=trustme.KeyType.ECDSA)
    issued = authority.issue_cert(*names, key_type=trustme.KeyType.ECDSA)
    ca, cert, key = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    authority.cert_pem.write_to_path(str(ca))
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return Certificates(ca, cert, key)


def _serve_files(files: dict[str, bytes], ready, hosts: tuple[str, ...], tls: Certificates | None, rtt_s: float,
                 counts) -> None:
    """A minimal asyncio HTTP/1.1 server for in-memory files, keeping connections alive unless
    the client sends `Connection: close` (img2dataset's urllib does): python's http.server tops
    out near 200 requests/s here, which would measure the server rather than the clients.
    With `tls`, it speaks HTTPS only. With `rtt_s`, each host is a proxy that delays every
    byte by half a round trip each way and a new connection's first bytes by one more round
    trip (the TCP handshake): a new HTTPS connection then costs three round trips before the
    response (TCP, TLS 1.3, request), a request on a kept-alive one costs one. `counts` (shared
    integers) receive connections and requests."""
    import asyncio
    import ssl

    connections, requests = counts

    async def handle(reader, writer):
        with connections.get_lock():
            connections.value += 1
        try:
            while request := await reader.readline():
                close = request.rstrip().endswith(b"HTTP/1.0")
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"connection:") and b"close" in line.lower():
                        close = True
                parts = request.split()
                data = files.get(parts[1].decode()) if len(parts) > 1 else None
                with requests.get_lock():
                    requests.value += 1
                ending = b"Connection: close\r\n\r\n" if close else b"\r\n"
                if data is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" + ending)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                                 % len(data) + ending + data)
                await writer.drain()
                if close:
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def pump(reader, writer, first_due: float) -> None:
        """Copy reader to writer, each chunk delivered half a round trip after it arrived (and
        not before first_due), in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await queue.get()
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(deliver())
        due = first_due
        try:
            while data := await reader.read(1 << 16):
                due = max(due, loop.time() + rtt_s / 2)
                queue.put_nowait((due, data))
        except ConnectionError:
            pass
        queue.put_nowait((max(due, loop.time() + rtt_s / 2), None))
        with contextlib.suppress(ConnectionError, OSError):
            await task

    async def proxy(origin_port: int, reader, writer):
        accepted = asyncio.get_running_loop().time()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", origin_port)
        try:
            await asyncio.gather(pump(reader, up_writer, accepted + rtt_s * 1.5), pump(up_reader, writer, 0.0))
        finally:
            writer.close()
            up_writer.close()

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)  # failed handshakes
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
        bound = []
        if rtt_s:
            origin = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024, ssl=context)
            port = origin.sockets[0].getsockname()[1]
            for host in hosts:
                server = await asyncio.start_server(lambda r, w: proxy(port, r, w), host, 0, backlog=1024)
                bound.append((host, server.sockets[0].getsockname()[1]))
        else:
            for host in hosts:
                server = await asyncio.start_server(handle, host, 0, backlog=1024, ssl=context)
                bound.append((host, server.sockets[0].getsockname()[1]))
        ready.send(bound)
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve(files: dict[str, bytes], hosts: tuple[str, ...], tls: Certificates | None, rtt_s: float):
    """Serve `files` from a separate process (not sharing the measured client's GIL); returns
    the process, the base URL of each host and the (connections, requests) counters."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    counts = (context.Value("q", 0), context.Value("q", 0))
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_serve_files, args=(files, send, hosts, tls, rtt_s, counts), daemon=True)
    process.start()
    if not receive.poll(30):
        process.kill()
        raise RuntimeError("the benchmark's HTTP server did not start")
    scheme = "https" if tls else "http"
    return process, [f"{scheme}://{host}:{port}" for host, port in receive.recv()], counts


def _taken(counts) -> tuple[int, int]:
    """The (connections, requests) counted since the last call, which resets them."""
    taken = []
    for count in counts:
        with count.get_lock():
            taken.append(count.value)
            count.value = 0
    return taken[0], taken[1]


def find_img2dataset(path: str | None) -> Path:
    """The img2dataset executable: given, on PATH, or in the venv `make bench-env` builds
    (its own venv: img2dataset pins pandas and pulls wandb and OpenCV)."""
    for candidate in (path, shutil.which("img2dataset"), REPO / ".venv-img2dataset" / "bin" / "img2dataset"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("img2dataset not found: `make bench-env` installs it into .venv-img2dataset, "
                            "or pass --img2dataset PATH")


def _img2dataset(exe: Path, urls: list[str], out: Path, workers: int, env: dict) -> tuple[subprocess.CompletedProcess,
                                                                                          float]:
    """Run img2dataset on `urls` (bytes kept as served); its result and CPU seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.txt").write_text("".join(u + "\n" for u in urls))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run([str(exe), "--url_list", str(out.parent / f"{out.name}.txt"), "--input_format", "txt",
                          "--output_format", "files", "--output_folder", str(out), "--resize_mode", "no",
                          "--disable_all_reencoding", "True", "--processes_count", "1", "--thread_count", str(workers),
                          "--number_sample_per_shard", str(len(urls)), "--distributor", "multiprocessing",
                          "--enable_wandb", "False"], capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{run.stderr[-2000:]}")
    return run, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def bench_fetch(images: int = 2000, workers: int = 16, img2dataset: str | None = None, tls: bool = False,
                latency_ms: float = 0.0, hosts: int = 1) -> dict[str, float | int]:
    """Images/s downloading the same URL list of 479x587 JPEGs from `hosts` loopback hosts
    (127.0.0.1, .2, ...): our fetch stage (licence gate, opt-out check, sha256, raw tar and
    records) against img2dataset (output format files, no resize, `--disable_all_reencoding`:
    by default it decodes and re-encodes every JPEG, which ours never does), each with
    `workers` threads in one process (ours: per_host = workers, so the same requests in
    flight). With `tls` the server speaks HTTPS with a certificate made for the run (ours
    trusts its CA through fetch.ca_bundle, img2dataset through SSL_CERT_FILE); `latency_ms` is
    the emulated round trip. The baseline's rate is over its own download duration (its
    start-up excluded, which favours it); its CPU seconds are its run's less those of a
    one-URL run (start-up). `same_bytes` counts URLs whose bytes both kept exactly as served:
    the two did the same work only if it equals `images`. Connections and requests are
    counted by the server."""
    exe = find_img2dataset(img2dataset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        certificates = make_certificates(tmp / "tls") if tls else None
        photos = list(read_tar(synthetic_shard(tmp / "src", min(images, 50)).raw).values())
        paths = [f"/{i:06d}.jpg" for i in range(images)]
        served = {path: photos[i % len(photos)] for i, path in enumerate(paths)}
        server, bases, counts = _serve(served, LOOPBACK_HOSTS[:hosts], certificates, latency_ms / 1000)
        urls = [bases[i % len(bases)] + path for i, path in enumerate(paths)]
        try:
            keys = [f"{i:020x}" for i in range(images)]
            manifest = pd.DataFrame({"key": keys, "url": urls, "license": "CC BY 4.0", "license_url": "",
                                     "attribution": "Photographer", "contract_error": ""})
            config = validate_config({"sources": ["unused.csv"], "shards": 1, "judge": {"model": "m"},
                                      "embed": {"model": "m"}, "caption": {"model": "m"},
                                      "fetch": {"workers": workers, "per_host": workers, "retries": 0,
                                                "allow_networks": ["127.0.0.0/8"],
                                                "ca_bundle": str(certificates.ca) if certificates else ""}})
            cpu, start = time.process_time(), time.perf_counter()
            records = fetch_shard(manifest, config, tmp / "raw.tar", tmp / "fetch.parquet")
            ours_s, ours_cpu_s = time.perf_counter() - start, time.process_time() - cpu
            ours_connections, ours_requests = _taken(counts)
            ours_ok = int((records["fetch_status"] == "ok").sum())
            ours_bytes = dict(zip(records["key"], records["raw_member"].map(read_tar(tmp / "raw.tar").get)))

            env = {**os.environ, **({"SSL_CERT_FILE": str(certificates.ca), "REQUESTS_CA_BUNDLE": str(certificates.ca)}
                                    if certificates else {})}
            _, startup_cpu_s = _img2dataset(exe, urls[:1], tmp / "i2d-startup", workers, env)
            _taken(counts)
            start = time.perf_counter()
            run, baseline_cpu_s = _img2dataset(exe, urls, tmp / "i2d", workers, env)
            baseline_wall_s = time.perf_counter() - start
            baseline_connections, baseline_requests = _taken(counts)
        finally:
            server.kill()
        stats = [json.loads(p.read_text()) for p in (tmp / "i2d").glob("*_stats.json")]
        baseline_ok = sum(s["successes"] for s in stats)
        baseline_s = sum(s["duration"] for s in stats)
        baseline_bytes = {json.loads(p.read_text())["url"]: p.with_suffix(".jpg").read_bytes()
                          for p in (tmp / "i2d").glob("*/*.json") if p.with_suffix(".jpg").exists()}
        same_bytes = sum(ours_bytes.get(key) == baseline_bytes.get(url) == served[path]
                         for key, url, path in zip(keys, urls, paths))
    baseline_cpu_s = max(baseline_cpu_s - startup_cpu_s, 1e-9)
    return {"images": images, "workers": workers, "tls": int(tls), "latency_ms": latency_ms, "hosts": hosts,
            "ours_ok": ours_ok, "baseline_ok": baseline_ok, "same_bytes": same_bytes,
            "ours_images_per_s": ours_ok / ours_s, "baseline_images_per_s": baseline_ok / baseline_s,
            "ours_s": ours_s, "baseline_s": baseline_s, "baseline_wall_s": baseline_wall_s,
            "ours_connections": ours_connections, "baseline_connections": baseline_connections,
            "ours_requests": ours_requests, "baseline_requests": baseline_requests,
            "ours_cpu_s": ours_cpu_s, "baseline_cpu_s": baseline_cpu_s,
            "ours_images_per_core_s": ours_ok / ours_cpu_s, "baseline_images_per_core_s": baseline_ok / baseline_cpu_s,
            "ratio": (ours_ok / ours_s) / (baseline_ok / baseline_s)}
