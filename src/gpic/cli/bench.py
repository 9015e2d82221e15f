"""`gpic bench NAME`: ours and the baseline in one run; the last line is key=value figures."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gpic.cli.common import bench_app, console
from gpic.layout import RESULTS_LAYOUT


@bench_app.command("fd")
def bench_fd(model: Path = Path("resources/models/tiny/dinov2-tiny"), images: int = 64, batch_size: int = 32,
             repeat: int = 3, device: str = "cpu", threads: int = 1) -> None:
    """FD-DINOv2 feature extraction images/s from the same 479x587 JPEGs: ours (PIL resize +
    numpy normalisation) against the checkpoint's AutoImageProcessor, same model forward."""
    import torch

    from gpic.bench import figures_line
    from gpic.bench.fd import bench_fd as run

    torch.set_num_threads(threads)
    figures = run(model, images, batch_size, repeat, device)
    console.print(f"{images} JPEGs 479x587 -> {figures['model']} features on {device}: ours "
                  f"{figures['ours_images_per_s']:.0f}/s, {figures['baseline_processor']} "
                  f"{figures['baseline_images_per_s']:.0f}/s")
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
                  title=f"snakemake -n at {shards} shards")
    for label, size in (("ours", per_job), ("baseline", baseline_per_job)):
        table.add_row(f"{label}: {size} shard(s) per job", str(figures[f"{label}_jobs"]),
                      *(f"{figures[f'{label}_{k}_s']:.1f}" for k in ("empty", "built", "stale")),
                      str(figures[f"{label}_stale_jobs"]))
    console.print(table)
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
                    None, help="img2dataset executable [PATH, then .venv-img2dataset]")) -> None:
    """Download images/s from a loopback server: our fetch stage against img2dataset
    (output format files, no resize, no re-encoding: bytes kept, as ours) on the same URL
    list, same thread count."""
    from gpic.bench import figures_line
    from gpic.bench.fetch import bench_fetch as run

    figures = run(images, workers, img2dataset)
    console.print(f"{images} JPEGs 479x587 over loopback, {workers} threads: ours {figures['ours_images_per_s']:.0f}/s "
                  f"({figures['ours_ok']} ok), img2dataset {figures['baseline_images_per_s']:.0f}/s "
                  f"({figures['baseline_ok']} ok, {figures['baseline_wall_s']:.1f} s with start-up); "
                  f"{figures['same_bytes']} kept the served bytes in both")
    print(figures_line(figures))


@bench_app.command("caption")
def bench_caption(model: str = "resources/models/tiny/qwen3-vl-tiny", images: int = 16, batch_size: int = 8,
                  device: str = "cpu", backend: str = "transformers", threads: int = 1,
                  config: Path = typer.Option(
                      None, help="Take the four levels' prompts and budgets from this config.")) -> None:
    """Captioning images/s and output tokens/s (four levels) for MODEL at BATCH_SIZE, against
    the same model one image at a time."""
    import torch
    import yaml

    from gpic.bench import figures_line
    from gpic.bench.caption import bench_caption as run

    torch.set_num_threads(threads)
    levels = yaml.safe_load(config.read_text())["caption"].get("levels") if config else None
    figures = run(model, images, batch_size, device, backend, levels)
    console.print(f"{figures['model']} ({backend}, {device}), {images} images x 4 levels: batch {batch_size} "
                  f"{figures['ours_images_per_s']:.2f} images/s ({figures['ours_tokens_per_s']:.0f} tokens/s), "
                  f"one at a time {figures['baseline_images_per_s']:.2f} images/s")
    print(figures_line(figures))


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
                cosine_min: float = 0.9, nlist: int = typer.Option(0, help="IVF lists (0: about 4 sqrt(n))."),
                nprobe: int = 16, seed: int = 0) -> None:
    """Near-duplicate descriptor search on N synthetic unit descriptors with 1% planted copies
    and as many hard negatives just below COSINE_MIN: IVF over fp16 codes (ours) against exact
    IndexFlatIP (baseline); time, peak RSS, recall, false pairs."""
    from gpic.bench import figures_line
    from gpic.bench.dedup import bench_dedup as run

    f = run(n, dim, flat_n, cosine_min, nlist, nprobe, seed=seed)
    console.print(f"{n:,} descriptors of {dim}-d, {f['planted_pairs']:,} planted copies "
                  f"(cosine >= {cosine_min + 0.01:.2f}) and {f['hard_negatives']:,} hard negatives (cosine "
                  f"{cosine_min - 0.02:.3f}-{cosine_min - 0.005:.3f}, {f['flat_hard_negatives']:,} within flat's "
                  f"{f['flat_n']:,}):"
                  f" IVF{f['nlist']} nprobe {nprobe}: {f['ivf_s']:.1f} s, peak {f['ivf_rss_mb']:,} MB, recall "
                  f"{f['ivf_recall']:.4f}, {f['ivf_false_pairs']} false pairs; exact flat: "
                  f"{f['flat_measured_s']:.1f} s, peak {f['flat_rss_measured_mb']:,} MB over {f['flat_n']:,}, "
                  f"recall {f['flat_recall']:.4f}, {f['flat_false_pairs']} false pairs", soft_wrap=True)
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
