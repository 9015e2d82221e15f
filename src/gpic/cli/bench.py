"""`gpic bench NAME`: ours and the baseline in one run; the last line is key=value figures."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gpic.cli.common import bench_app, console
from gpic.layout import RESULTS_LAYOUT


@bench_app.command("fd")
def bench_fd(model: Path = Path("resources/models/tiny/dinov2-tiny"), images: int = 64, batch_size: int = 32,
             repeat: int = 3, device: str = "cpu", threads: int = 1,
             interval_images: int = typer.Option(10000, help="Stored features the interval resamples."),
             timed_resamples: int = typer.Option(3, help="Resamples timed per dimension (the interval's "
                                                         "default count is projected from them).")) -> None:
    """FD-DINOv2 feature extraction images/s from the same 479x587 JPEGs: ours (PIL resize +
    numpy normalisation) against the checkpoint's AutoImageProcessor, same model forward; then
    the bootstrap interval's cost on stored 1024-d and 2048-d features (no feature is
    recomputed) against a matrix square root per resample and Inception feature extraction."""
    import torch

    from gpic.bench import figures_line
    from gpic.bench.fd import bench_fd as run
    from gpic.bench.fd import bench_interval

    torch.set_num_threads(threads)
    figures = run(model, images, batch_size, repeat, device)
    console.print(f"{images} JPEGs 479x587 -> {figures['model']} features on {device}: ours "
                  f"{figures['ours_images_per_s']:.0f}/s, {figures['baseline_processor']} "
                  f"{figures['baseline_images_per_s']:.0f}/s")
    figures.update(bench_interval(interval_images, timed_resamples, device=device))
    console.print(f"interval of {figures['interval_resamples']} resamples on {interval_images} stored features: "
                  f"{figures['interval_1024_s']:.0f} s at 1024-d ({figures['resample_1024_s']:.2f} s per resample, "
                  f"sqrtm {figures['sqrtm_1024_s']:.2f} s), {figures['interval_2048_s']:.0f} s at 2048-d "
                  f"({figures['resample_2048_s']:.2f} s, sqrtm {figures['sqrtm_2048_s']:.2f} s); Inception features "
                  f"{figures['inception_images_per_s']:.2f} images/s, so the 2048-d interval costs "
                  f"{figures['interval_vs_extraction_2048']:.2f} of extracting them", soft_wrap=True)
    print(figures_line(figures))


@bench_app.command("pack")
def bench_pack(samples: int = 500, repeat: int = 5) -> None:
    """Pack throughput (MB/s) against a plain standard-library tar copy of the same bytes."""
    from gpic.bench import figures_line
    from gpic.bench.pack import bench_pack as run

    figures = run(samples, repeat)
    console.print(f"pack {figures['samples']} samples ({figures['mb']} MB): ours {figures['ours_mb_per_s']:.0f} MB/s, "
                  f"plain tar copy {figures['baseline_mb_per_s']:.0f} MB/s")
    print(figures_line(figures))


@bench_app.command("dag")
def bench_dag(shards: int = 8000, per_job: int = 10, baseline_per_job: int = 1) -> None:
    """`snakemake -n` seconds at SHARDS shards: nothing built, all built, 1% of blocks stale,
    with PER_JOB shards per job against BASELINE_PER_JOB (one job per shard)."""
    from gpic.bench import figures_line
    from gpic.bench.dag import bench_dag as run

    figures = run(shards, per_job, baseline_per_job)
    table = Table("design", "jobs", "nothing built s", "all built s", "1% stale s", "stale jobs",
                  "stale provenance", title=f"snakemake -n at {shards} shards")
    for label, size in (("ours", per_job), ("baseline", baseline_per_job)):
        table.add_row(f"{label}: {size} shard(s) per job", str(figures[f"{label}_jobs"]),
                      *(f"{figures[f'{label}_{k}_s']:.1f}" for k in ("empty", "built", "stale")),
                      str(figures[f"{label}_stale_jobs"]),
                      f"{figures[f'{label}_stale_provenance']} for {figures[f'{label}_stale_blocks']} rebuilt blocks")
    console.print(table)
    console.print(f"damage scan (gpic status over {figures['damage_scan_files']} recorded files): "
                  f"{figures['damage_scan_s']:.1f} s, which a check at DAG time would add to every snakemake command")
    if figures["slurm_probe_s"] > 1:
        console.print(f"[yellow]every snakemake command here also waits {figures['slurm_probe_s']:.1f} s for the "
                      "SLURM plugin's `scontrol show config` (no controller answers); left out above[/yellow]")
    print(figures_line(figures))


@bench_app.command("loader")
def bench_loader(shards: list[str] = typer.Argument(None, help="Tar paths, URLs or folders [results/packed/train]."),
                 workers: int = typer.Option(2, help="DataLoader workers for the second measurement."),
                 synthetic: int = typer.Option(0, help="If the shards are missing, build some of N images each."),
                 size: int = 256, batch_size: int = 64, repeat: int = 3) -> None:
    """Training-loader images/s at SIZE x SIZE: ours against webdataset's decode("pil") +
    torchvision resize/crop, on one core and with WORKERS workers (ratio is per core)."""
    from gpic.bench import figures_line
    from gpic.bench.loader import bench_loader as run

    figures = run(shards or [str(RESULTS_LAYOUT.packed_root / "train")], workers, synthetic, size, batch_size, repeat)
    console.print(f"{figures['images']} images in {figures['shards']} shards at {size}x{size}, one core: ours "
                  f"{figures['ours_images_per_s']:.0f}/s, webdataset {figures['baseline_images_per_s']:.0f}/s; "
                  f"{workers} workers: ours {figures['ours_workers_images_per_s']:.0f}/s, "
                  f"webdataset {figures['baseline_workers_images_per_s']:.0f}/s")
    print(figures_line(figures))


@bench_app.command("fetch")
def bench_fetch(images: int = 2000, workers: int = 16,
                img2dataset: str = typer.Option(
                    None, help="img2dataset executable [PATH, then .venv-img2dataset]"),
                tls: bool = typer.Option(False, help="HTTPS with a certificate made for the run."),
                latency_ms: float = typer.Option(None, help="Emulated network round trip [50 with --tls, else 0]."),
                hosts: int = typer.Option(None, min=1, max=3, help="Loopback hosts serving the URLs in turn "
                                          "[3 with --tls, else 1].")) -> None:
    """Download images/s from a loopback server: our fetch stage against img2dataset
    (output format files, no resize, no re-encoding: bytes kept, as ours) on the same URL
    list, same thread count. With --tls, over HTTPS from a few hosts behind an emulated round
    trip, where a new connection costs handshakes that a kept-alive one does not."""
    from gpic.bench import figures_line
    from gpic.bench.fetch import bench_fetch as run

    latency_ms = (50.0 if tls else 0.0) if latency_ms is None else latency_ms
    hosts = (3 if tls else 1) if hosts is None else hosts
    f = run(images, workers, img2dataset, tls, latency_ms, hosts)
    console.print(f"{images} JPEGs 479x587 over loopback {'HTTPS' if tls else 'HTTP'}, {hosts} host(s), round trip "
                  f"{latency_ms:g} ms, {workers} threads: ours {f['ours_images_per_s']:.0f}/s ({f['ours_ok']} ok, "
                  f"{f['ours_connections']} connections), img2dataset {f['baseline_images_per_s']:.0f}/s "
                  f"({f['baseline_ok']} ok, {f['baseline_connections']} connections, {f['baseline_wall_s']:.1f} s "
                  f"with start-up); {f['same_bytes']} kept the served bytes in both; per core-second of CPU: "
                  f"ours {f['ours_images_per_core_s']:.0f}, img2dataset {f['baseline_images_per_core_s']:.0f} images",
                  soft_wrap=True)
    print(figures_line(f))


@bench_app.command("caption")
def bench_caption(model: str = typer.Option(None, help="A local VLM [built: the proportional tiny Qwen3-VL]."),
                  images: int = 16, batch_size: int = 8,
                  device: str = "cpu", backend: str = "transformers", threads: int = 1,
                  config: Path = typer.Option(
                      None, help="Take the four levels' prompts and budgets from this config."),
                  scorer: str = typer.Option(
                      None, help="A local agreement scorer [built: the proportional SigLIP].")) -> None:
    """Captioning images/s and output tokens/s (four levels) for MODEL at BATCH_SIZE: the image's
    prefix computed once for the four levels (ours) against one full-prompt generate per level
    (the current path), same batches; identical captions, and vision-tower passes per image.
    Then the cost of caption hygiene and the agreement scorer as a share of caption time
    (added_share) and, by FLOPs on the GPU path, SigLIP base's share of Qwen3-VL-4B's
    (scorer_flop_share_h100; target under 5%)."""
    import torch
    import yaml

    from gpic.bench import figures_line
    from gpic.bench.caption import bench_caption as run

    torch.set_num_threads(threads)
    levels = yaml.safe_load(config.read_text())["caption"].get("levels") if config else None
    f = run(model, images, batch_size, device, backend, levels, scorer)
    console.print(f"{f['model']} ({backend}, {device}), {images} images x 4 levels, batch {batch_size}: ours "
                  f"{f['ours_images_per_s']:.2f} images/s ({f['ours_tokens_per_s']:.0f} tokens/s, "
                  f"{f['vision_passes_per_image']:g} vision passes per image), current path "
                  f"{f['baseline_images_per_s']:.2f} images/s ({f['baseline_vision_passes_per_image']:g}); same "
                  f"captions {f['same_captions']}", soft_wrap=True)
    if "image_tokens" in f:
        console.print(f"{f['image_tokens']} image tokens against {f['text_tokens']} text tokens per image (prompts and "
                      f"budgets); expected on an H100 from the FLOPs of Qwen3-VL-4B: x{f['flop_ratio_h100']:.2f}",
                      soft_wrap=True)
    console.print(f"hygiene {f['hygiene_s']:.3f} s and agreement scorer {f['scorer_s']:.2f} s "
                  f"({f['scorer']}): {f['added_share']:.1%} of caption time here"
                  + (f"; SigLIP base by FLOPs on the GPU path: {f['scorer_flop_share_h100']:.1%} of Qwen3-VL-4B's"
                     if "scorer_flop_share_h100" in f else ""), soft_wrap=True)
    print(figures_line(f))


@bench_app.command("filter")
def bench_filter(images: int = 300, repeat: int = 3) -> None:
    """Filter decode + scores, images/s on one core of the same 479x587 JPEGs: ours (JPEG draft
    decode, scores on a small grey image) against the same scores after a full decode; and
    their verdicts on blurred photos near the blur threshold."""
    from gpic.bench import figures_line
    from gpic.bench.filter import bench_filter as run

    f = run(images, repeat)
    console.print(f"{images} JPEGs 479x587, one core: ours {f['ours_images_per_s']:.0f}/s, same scores after a full "
                  f"decode {f['baseline_images_per_s']:.0f}/s (full-resolution scores, for context: "
                  f"{f['plain_images_per_s']:.0f}/s); same verdicts on {f['agree']} of {images}")
    console.print(f"near the blur threshold (full decode's blur 0.5-2x min_blur): same verdicts on {f['near_agree']} "
                  f"of {f['near_threshold']} ({f['near_pass']} pass at full decode), those that differ within "
                  f"{f['near_flip_within']:.0%} of min_blur; our blur / full decode's "
                  f"{f['near_blur_ratio_min']:.2f}-{f['near_blur_ratio_max']:.2f}")
    print(figures_line(f))


@bench_app.command("dedup")
def bench_dedup(n: int = 1_000_000, dim: int = 512, flat_n: int = typer.Option(100_000, help="Descriptors the exact "
                "baseline searches; its time is extrapolated by (n/flat_n)^2 when smaller than N."),
                cosine_min: float = 0.9,
                nlist: int = typer.Option(0, help="IVF lists (0: about sqrt(n) for ivfpq, 4 sqrt(n) for ivf)."),
                nprobe: int = 16, neighbours: int = typer.Option(8, help="ivfpq: candidates re-scored per descriptor."),
                index: list[str] = typer.Option(["ivfpq", "ivf"], help="Approximate indexes to time over all N, "
                                                "ours first (ivf holds 1 KB a descriptor: leave it out at 10M)."),
                seed: int = 0) -> None:
    """Near-duplicate descriptor search on N synthetic unit descriptors with 1% planted copies
    and as many hard negatives just below COSINE_MIN: IVF-PQ codes re-scored exactly (ours)
    and IVF over fp16 codes against exact IndexFlatIP (baseline); time, peak RSS, recall,
    false pairs."""
    from gpic.bench import figures_line
    from gpic.bench.dedup import bench_dedup as run

    unknown = sorted(set(index) - {"ivfpq", "ivf"})
    if unknown:
        raise typer.BadParameter(f"unknown index {', '.join(unknown)}: choose ivfpq or ivf", param_hint="--index")
    f, phases = run(n, dim, flat_n, cosine_min, nlist, nprobe, seed=seed, indexes=tuple(index), neighbours=neighbours)
    console.print(f"{n:,} descriptors of {dim}-d, {f['planted_pairs']:,} planted copies "
                  f"(cosine >= {cosine_min + 0.01:.2f}) and {f['hard_negatives']:,} hard negatives (cosine "
                  f"{cosine_min - 0.02:.3f}-{cosine_min - 0.005:.3f}, {f['flat_hard_negatives']:,} within flat's "
                  f"{f['flat_n']:,}):", soft_wrap=True)
    for kind in index:
        k = {name.removeprefix(f"{kind}_"): value for name, value in f.items() if name.startswith(f"{kind}_")}
        console.print(f"  {kind} {k['nlist']} lists, nprobe {nprobe}: {k['s']:.1f} s, peak {k['rss_mb']:,} MB, "
                      f"recall {k['recall']:.4f} (of exact search's pairs in the sample: {k['sample_recall']:.4f}), "
                      f"{k['false_pairs']} false pairs", soft_wrap=True)
        for line in phases[kind]:
            console.print(f"    [dim]{line}[/dim]", soft_wrap=True)
    console.print(f"  exact flat: {f['flat_measured_s']:.1f} s, peak {f['flat_rss_measured_mb']:,} MB over "
                  f"{f['flat_n']:,}, recall {f['flat_recall']:.4f}, {f['flat_false_pairs']} false pairs",
                  soft_wrap=True)
    console.print(f"perceptual hash, {n:,} codes, radius 4: {f['phash_s']:.1f} s, recall {f['phash_recall']:.4f}")
    if f["extrapolated"]:
        console.print(f"[yellow]flat at {n:,} EXTRAPOLATED from {f['flat_n']:,}: time x{(n / f['flat_n']) ** 2:,.0f} "
                      f"-> {f['flat_s']:,.0f} s, memory linear -> {f['flat_rss_mb']:,} MB[/yellow]", soft_wrap=True)
    print(figures_line(f))


@bench_app.command("dedup-quality")
def bench_dedup_quality(config: Path = Path("config.yaml"),
                        demo: Path | None = typer.Option(None, help="Use the demo corpus's distinct images (e.g. "
                                                         "resources/demo) instead of the shipped photos.")) -> None:
    """Planted copies of real photos (re-encodes, resizes, crops, flip, colour): copies each
    layer catches alone, copies the whole dedup removes, and links between distinct photos."""
    from gpic.bench import figures_line
    from gpic.bench.dedup import dedup_quality, quality_photos
    from gpic.config import load_config

    cfg = load_config(config)
    report, summary = dedup_quality(quality_photos(demo), cfg)
    d = cfg["dedup"]
    console.print(f"planted copies of {summary['photos']} photos; layers alone: exact sha256, phash <= "
                  f"{d['phash_max_distance']}, descriptor cosine >= {d['cosine_min']} ({cfg['embed']['model']}); "
                  "removed: copy or original no longer both kept after all layers (only direct links remove)",
                  soft_wrap=True)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    console.print(f"links between distinct photos: exact {summary['false_links_exact']}, phash "
                  f"{summary['false_links_phash']}, descriptor {summary['false_links_descriptor']}; "
                  f"distinct photos wrongly removed: {summary['distinct_removed']}; largest component "
                  f"{summary['largest_component']}, images a chain would have removed {summary['chain_removed']}")
    print(figures_line(summary))


@bench_app.command("judge")
def bench_judge(model: str = typer.Option(None, help="A local VLM [built: the proportional tiny Qwen3-VL]."),
                images: int = 32, batch_size: int = 16, device: str = "cpu", threads: int = 1) -> None:
    """Judge images/s with the default criteria: one forward pass per image and criterion over
    a shared image prefix (ours) against one short generate per criterion over the whole
    prompt (the current path), same model and batches; vision-tower passes per image."""
    import torch

    from gpic.bench import figures_line
    from gpic.bench.judge import bench_judge as run

    torch.set_num_threads(threads)
    f = run(model, images, batch_size, device)
    console.print(f"{f['model']} ({device}), {images} images x {f['criteria']} criteria, batch {batch_size}: ours "
                  f"{f['ours_images_per_s']:.2f} images/s ({f['vision_passes_per_image']:g} vision passes per image), "
                  f"current path {f['baseline_images_per_s']:.2f} images/s "
                  f"({f['baseline_vision_passes_per_image']:g}); {f['image_tokens']} image tokens against "
                  f"{f['text_tokens']} text tokens per image; expected on an H100 from the FLOPs of Qwen3-VL-4B: "
                  f"x{f['flop_ratio_h100']:.2f}", soft_wrap=True)
    print(figures_line(f))


@bench_app.command("embed")
def bench_embed(model: str = typer.Option(None, help="A TorchScript copy detector [built: the tiny stand-in]."),
                images: int = 256, batch_size: int = 64, device: str = "cpu", threads: int = 1) -> None:
    """Embed images/s on real photos of mixed aspect ratios: images decoded once for the
    judge, square resize with every batch one forward pass, pHash from the filter's table
    (ours) against decoding again, imagehash's pHash and aspect-keeping resize that batches
    only equal shapes (the current path); cosine between the two descriptors."""
    import torch

    from gpic.bench import figures_line
    from gpic.bench.embed import bench_embed as run

    torch.set_num_threads(threads)
    f = run(model, images, batch_size, device)
    console.print(f"{f['model']} ({device}), {images} photos in {f['shapes']} shapes, batch {batch_size}: ours "
                  f"{f['ours_images_per_s']:.0f} images/s in {f['ours_forward_passes']} forward passes, current path "
                  f"{f['baseline_images_per_s']:.0f} images/s in {f['baseline_forward_passes']} "
                  f"({f['baseline_images_per_pass']:.1f} images per pass); descriptor cosine ours/current min "
                  f"{f['cosine_min']:.4f} mean {f['cosine_mean']:.4f}; pHash filter/imagehash Hamming median "
                  f"{f['phash_hamming_median']:g}, max {f['phash_hamming_max']}", soft_wrap=True)
    print(figures_line(f))


@bench_app.command("scale")
def bench_scale(keys: list[int] = typer.Option([100_000], "--keys", help="Keys of one synthesized run; repeat the "
                                               "option for several sizes (two or more fit and extrapolate)."),
                shards: int = typer.Option(8000, help="Raw shards (production: 8000; fewer fit a small machine)."),
                steps: list[str] = typer.Option(None, "--steps", help="Steps to measure (repeat or comma-separate) "
                                                "[partition,dedup,summary,publish,verify,report,cost,status]."),
                work: Path = typer.Option(None, help="Keep the synthesized runs here (default: a temporary folder, "
                                          "deleted)."),
                tar_gb: float = typer.Option(1.0, help="GB of the file whose sha256 gives the tar checksum rate."),
                seed: int = 0) -> None:
    """Wall time and peak RSS of every step that reads across shards (partition, dedup, summary,
    publish, verify, report, cost, status), each in a fresh process, on the per-shard tables a
    run over N keys leaves behind; with two or more sizes, each step fitted to a + b*N and
    extrapolated to 110M keys."""
    import math

    from gpic.bench import figures_line
    from gpic.bench.scale import IMAGE_BYTES, STEPS, TARGET_KEYS
    from gpic.bench.scale import bench_scale as run

    chosen = [s.strip() for value in (steps or STEPS) for s in value.split(",") if s.strip()]
    try:
        f = run(keys, shards, chosen, work, seed, tar_gb, say=lambda line: console.print(line, soft_wrap=True))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    measured = [s for s in STEPS if f"{s}_hours_110m" in f]
    sizes = [int(n) for n in str(f["keys"]).split(",")]
    for n in sizes:
        table = Table("step", "seconds", "peak RSS MB", title=f"{n:,} keys, {shards:,} shards")
        for step in measured:
            seconds, rss = f[f"{step}_s_{n}"], f[f"{step}_rss_mb_{n}"]
            table.add_row(step, "failed" if math.isnan(seconds) else f"{seconds:,.1f}",
                          "" if math.isnan(rss) else f"{rss:,.0f}")
        console.print(table)
    if len(sizes) > 1:
        title = (f"least squares a + b*N (b >= 0) over {len(sizes)} sizes, extrapolated to "
                 f"{TARGET_KEYS / 1e6:.0f}M keys at {shards:,} shards")
        table = Table("step", "s per 1M keys", "MB per 1M keys", "time ~ N^x", "hours at 110M",
                      "peak RSS GB at 110M", title=title)
        for step in measured:
            table.add_row(step, *(f"{f[name]:,.2f}" for name in (f"{step}_s_per_mkey", f"{step}_mb_per_mkey",
                                                                  f"{step}_exponent", f"{step}_hours_110m",
                                                                  f"{step}_rss_gb_110m")))
        console.print(table)
    console.print(f"tar checksums (sha256, one core, page cache): {f['tar_sha256_s_per_gb']:.2f} s per GB; the "
                  f"{f['tar_tb_110m']:.1f} TB of tars at 110M keys ({IMAGE_BYTES / 1e3:.0f} kB images assumed) take "
                  f"{f['tar_sha256_hours_110m']:.1f} h, in publish and again in verify (on every core there)",
                  soft_wrap=True)
    if f["failed"] != "none":
        console.print(f"[red]failed or skipped: {f['failed']}[/red]")
    print(figures_line(f))
