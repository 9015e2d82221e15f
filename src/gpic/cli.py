"""The `gpic` command: build tiny models and the demo corpus, trace one image, summarise a run."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="GPIC pipeline tools.", no_args_is_help=True, pretty_exceptions_show_locals=False)
models_app = typer.Typer(help="Model checkpoints.", no_args_is_help=True)
app.add_typer(models_app, name="models")
bench_app = typer.Typer(help="Benchmarks: ours and the baseline in one run; the last line is key=value figures.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()


@models_app.command("tiny")
def models_tiny(out_dir: Path, seed: int = 0) -> None:
    """Build tiny random-weight Qwen3-VL, copy-detection and DINOv2 models in OUT_DIR."""
    from gpic.models import build_tiny_models

    for name, path in build_tiny_models(out_dir, seed=seed).items():
        console.print(f"{name}: {path}")


@app.command()
def demo(out_dir: Path = typer.Argument(Path("resources/demo")), seed: int = 0) -> None:
    """Build the bundled demo corpus (real photos shipped by installed packages) in OUT_DIR."""
    from gpic.demo import build_demo

    build_demo(out_dir, seed=seed)
    console.print(f"demo corpus: {out_dir}")


@app.command()
def lineage(key: str, results: Path = Path("results"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Print everything recorded about one image: source, licence, fetch, scores, verdicts,
    dedup cluster, captions and the tar it was packed into (or why it was dropped)."""
    from gpic.provenance import lineage as trace

    try:
        record = trace(key, results)
    except (KeyError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    final = record.get("provenance") or {}
    console.rule(f"[bold]{key}[/bold]  shard {record['shard']}  ->  {final.get('state', '?')}")
    for section, values in record.items():
        if not isinstance(values, dict):
            continue
        table = Table(title=section, show_header=False, title_justify="left", expand=True)
        table.add_column("field", style="cyan", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in values.items():
            table.add_row(name, json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value))
        console.print(table)


@app.command()
def summary(results: Path = Path("results"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Final states per shard and per stage/reason; fails if any shard's counts do not add up."""
    from gpic.provenance import summarise

    report = summarise(results)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        table = Table("shard", "in", "packed", "dropped", "failed", title="final states")
        for shard, c in report["shards"].items():
            table.add_row(shard, *(str(c[k]) for k in ("in", "packed", "dropped", "failed")))
        console.print(table)
        reasons = Table("state", "stage", "reason", "keys", title="by stage and reason")
        for row in report["reasons"]:
            reasons.add_row(row["state"], row["stage"], row["reason"], str(row["keys"]))
        console.print(reasons)
    if not report["conserved"]:
        console.print("[red]counts do not conserve: in != packed + dropped + failed[/red]")
        raise typer.Exit(1)


@app.command()
def status(results: Path = Path("results"), config: Path = Path("config.yaml"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Per job: how many blocks (shards_per_job shards each) or files are done and which are
    pending, from what is on disk. `snakemake -n` also knows what is stale."""
    from gpic.config import load_config
    from gpic.jobs import status as job_status

    rows = job_status(results, load_config(config))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("job", "done", "pending", "first pending", title=f"{results}: jobs on disk")
    for row in rows:
        shown = ", ".join(row["pending"][:4]) + (f" (+{len(row['pending']) - 4} more)" if len(row["pending"]) > 4 else "")
        table.add_row(row["job"], f"{row['done']}/{row['total']}", str(len(row["pending"])), shown)
    console.print(table)


@app.command()
def cost(results: Path = Path("results"), config: Path = Path("config.yaml"),
         out: Path = typer.Option(None, help="Also write the figures as JSON here.")) -> None:
    """CPU core-hours, GPU-hours, wall time, money, storage and egress at the target scale of
    config `cost:`, from this run's benchmark files; says which figures are measured and which
    assumed."""
    from gpic.config import load_config
    from gpic.cost import estimate

    from gpic.store import write_json

    report = estimate(results, load_config(config))
    table = Table("job", "images at target", "source", "CPU core-h", "GPU-h", "USD", "wall h",
                  title=f"cost at {report['target']['captioned']:,.0f} captioned images")
    for job in report["jobs"]:
        table.add_row(job["job"], f"{job['target_images']:,.0f}", job["source"],
                      *(f"{job.get(k, 0):,.1f}" for k in ("cpu_core_hours", "gpu_hours", "usd", "wall_hours")))
    console.print(table)
    t, s = report["totals"], report["storage"]
    console.print(f"compute ${t['compute_usd']:,.0f}; storage {s['packed_tb']:.2f} TB packed "
                  f"({s['packed_bytes_per_image'] / 1e3:.0f} kB/image) + {s['raw_tb']:.2f} TB raw, "
                  f"${s['usd_per_month']:,.0f}/month; one download: "
                  + ", ".join(f"{tier} {e['tb']:.2f} TB ${e['usd']:,.0f}" for tier, e in report["egress_per_download"].items()))
    for note in report["notes"]:
        console.print(f"[dim]{note}[/dim]")
    if out:
        write_json(report, out)


@app.command("report")
def report_command(results: Path = Path("results"), config: Path = Path("config.yaml"),
                   out: Path = Path("results/report/index.html")) -> None:
    """Write the run report (one self-contained HTML page) from a finished run."""
    from gpic.config import load_config
    from gpic.report import write_report

    console.print(f"wrote {write_report(results, load_config(config), out)}")


@app.command()
def dropped(reason: str = typer.Option("", help="Text the drop reason contains (any case); empty lists all."),
            shard: str | None = typer.Option(None, help="Only this shard, e.g. 00003."),
            results: Path = Path("results"),
            sheet: Path | None = typer.Option(None, help="Also draw a contact sheet of the images (.jpg or .png)."),
            limit: int = typer.Option(120, help="Most images on the contact sheet.")) -> None:
    """List dropped keys (key, shard, stage, reason; tab-separated) for human review; their
    raw bytes stay in RESULTS/raw/{shard}.tar, and --sheet draws them with key and reason."""
    from gpic.audit import contact_sheet, dropped as find

    try:
        rows = find(results, reason, shard)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    print("key\tshard\tstage\treason")
    for row in rows.itertuples():
        print(f"{row.key}\t{row.shard}\t{row.stage}\t{row.reason}")
    if sheet:
        contact_sheet(rows.head(limit), results, sheet)
        console.print(f"contact sheet of {min(limit, len(rows))} image(s): {sheet}", soft_wrap=True)
    console.print(f"{len(rows)} dropped key(s)")


@app.command()
def verify(results: Path = typer.Argument(Path("results"))) -> None:
    """Check a results folder: tars against SHA256SUMS, each index against its tar, no key
    packed twice, every key of every shard in exactly one final state. Exit 1 naming problems."""
    from gpic.verify import verify as check

    problems = check(results)
    for problem in problems:
        console.print(f"[red]{problem}[/red]", soft_wrap=True)
    if problems:
        console.print(f"[red]{len(problems)} problem(s) in {results}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]{results}: verified[/green]")


@app.command()
def publish(results: Path = typer.Argument(Path("results")),
            repo_id: str = typer.Option("", help="Hub dataset repo, e.g. org/gpic."),
            dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, with sizes."),
            public: bool = typer.Option(False, "--public", help="Create the repo public (default private).")) -> None:
    """Verify RESULTS, then upload RESULTS/packed to the Hugging Face hub (resumable)."""
    from gpic.publish import published_files, upload
    from gpic.verify import verify as check

    problems = check(results)
    if problems:
        console.print(f"[red]refusing to publish: `gpic verify {results}` finds {len(problems)} problem(s), "
                      f"first: {problems[0]}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    packed = results / "packed"
    files = published_files(packed)
    table = Table("file", "bytes", title=f"{len(files)} files from {packed}")
    for path in files:
        table.add_row(str(path.relative_to(packed)), f"{path.stat().st_size:,}")
    total = sum(p.stat().st_size for p in files)
    table.add_row("[bold]total[/bold]", f"[bold]{total:,}[/bold]")
    console.print(table)
    if dry_run:
        return
    if not repo_id:
        console.print("[red]--repo-id is required to upload (or pass --dry-run)[/red]")
        raise typer.Exit(2)
    upload(packed, repo_id, private=not public)
    console.print(f"[green]uploaded to https://huggingface.co/datasets/{repo_id}[/green]")


@app.command("fd")
def fd_command(samples: Path = typer.Argument(..., help="A folder of images, a tar shard or an .npz of statistics."),
               ref: Path = typer.Option(Path("results/eval/fd_dinov2_test.npz"), help="Reference statistics (.npz)."),
               model: Path | None = typer.Option(None, help="DINOv2 folder; needed unless SAMPLES is an .npz."),
               out: Path | None = typer.Option(None, help="Write the result and its inputs' sha256 here (JSON)."),
               device: str = "cpu", batch_size: int = 32, workers: int = typer.Option(1, help="Decode threads.")) -> None:
    """FD-DINOv2 of SAMPLES against the test split's reference statistics (README: Evaluation).
    Refuses statistics made with another model revision or protocol version."""
    from gpic.fd import compare
    from gpic.store import write_json

    try:
        report = compare(samples, ref, model, device, batch_size, workers)
    except (ValueError, FileNotFoundError) as exc:  # StatsMismatch is a ValueError
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    s, r = report["samples"], report["reference"]
    console.print(f"{s['kind']} {s['path']}: {s['count']} images; reference {r['path']}: {r['count']} images; "
                  f"{s['model_id']} @ {s['model_revision']}, protocol v{report['protocol_version']}", soft_wrap=True)
    if out:
        write_json(report, out)
    print(f"FD-DINOv2 {report['fd_dinov2']:.4f}")


@bench_app.command("fd")
def bench_fd(model: Path = Path("resources/models/tiny/dinov2-tiny"), images: int = 64, batch_size: int = 32,
             repeat: int = 3, device: str = "cpu", threads: int = 1) -> None:
    """FD-DINOv2 feature extraction images/s from the same 479x587 JPEGs: ours (PIL resize +
    numpy normalisation) against the checkpoint's AutoImageProcessor, same model forward."""
    import torch

    from gpic.bench import figures_line
    from gpic.fd import bench_fd as run

    torch.set_num_threads(threads)
    figures = run(model, images, batch_size, repeat, device)
    console.print(f"{images} JPEGs 479x587 -> {figures['model']} features on {device}: ours "
                  f"{figures['ours_images_per_s']:.0f}/s, {figures['baseline_processor']} "
                  f"{figures['baseline_images_per_s']:.0f}/s")
    print(figures_line(figures))


@bench_app.command("pack")
def bench_pack(samples: int = 500, repeat: int = 5) -> None:
    """Pack throughput (MB/s) against a plain standard-library tar copy of the same bytes."""
    from gpic.bench import bench_pack as run, figures_line

    figures = run(samples, repeat)
    console.print(f"pack {figures['samples']} samples ({figures['mb']} MB): ours {figures['ours_mb_per_s']:.0f} MB/s, "
                  f"plain tar copy {figures['baseline_mb_per_s']:.0f} MB/s")
    print(figures_line(figures))


@bench_app.command("dag")
def bench_dag(shards: int = 8000, per_job: int = 10, baseline_per_job: int = 1) -> None:
    """`snakemake -n` seconds at SHARDS shards: nothing built, all built, 1% of blocks stale,
    with PER_JOB shards per job against BASELINE_PER_JOB (one job per shard)."""
    from gpic.bench import bench_dag as run, figures_line

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
    from gpic.loader import bench_loader as run

    figures = run(shards or ["results/packed/train"], workers, synthetic, size, batch_size, repeat)
    console.print(f"{figures['images']} images in {figures['shards']} shards at {size}x{size}, one core: ours "
                  f"{figures['ours_images_per_s']:.0f}/s, webdataset {figures['baseline_images_per_s']:.0f}/s; "
                  f"{workers} workers: ours {figures['ours_workers_images_per_s']:.0f}/s, "
                  f"webdataset {figures['baseline_workers_images_per_s']:.0f}/s")
    print(figures_line(figures))


@bench_app.command("fetch")
def bench_fetch(images: int = 2000, workers: int = 16,
                img2dataset: str = typer.Option(None, help="img2dataset executable [PATH, then .venv-img2dataset]")) -> None:
    """Download images/s from a loopback server: our fetch stage against img2dataset
    (output format files, no resize) on the same URL list, same thread count."""
    from gpic.bench import bench_fetch as run, figures_line

    figures = run(images, workers, img2dataset)
    console.print(f"{images} JPEGs 479x587 over loopback, {workers} threads: ours {figures['ours_images_per_s']:.0f}/s "
                  f"({figures['ours_ok']} ok), img2dataset {figures['baseline_images_per_s']:.0f}/s "
                  f"({figures['baseline_ok']} ok, {figures['baseline_wall_s']:.1f} s with start-up)")
    print(figures_line(figures))


@bench_app.command("caption")
def bench_caption(model: str = "resources/models/tiny/qwen3-vl-tiny", images: int = 16, batch_size: int = 8,
                  device: str = "cpu", backend: str = "transformers", threads: int = 1,
                  config: Path = typer.Option(None, help="Take the four levels' prompts and budgets from this config.")) -> None:
    """Captioning images/s and output tokens/s (four levels) for MODEL at BATCH_SIZE, against
    the same model one image at a time."""
    import torch
    import yaml

    from gpic.bench import bench_caption as run, figures_line

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
    decode, scores on a small grey image) against a full decode scoring the full image."""
    from gpic.bench import figures_line
    from gpic.filters import bench_filter as run

    figures = run(images, repeat)
    console.print(f"{images} JPEGs 479x587, one core: ours {figures['ours_images_per_s']:.0f}/s, full decode + "
                  f"full-resolution scores {figures['baseline_images_per_s']:.0f}/s (our scores after a full "
                  f"decode: {figures['full_decode_images_per_s']:.0f}/s)")
    print(figures_line(figures))


@bench_app.command("dedup")
def bench_dedup(n: int = 1_000_000, dim: int = 512, flat_n: int = typer.Option(100_000, help="Descriptors the exact "
                "baseline searches; its time is extrapolated by (n/flat_n)^2 when smaller than N."),
                cosine_min: float = 0.9, nlist: int = typer.Option(0, help="IVF lists (0: about 4 sqrt(n))."),
                nprobe: int = 16, seed: int = 0) -> None:
    """Near-duplicate descriptor search on N synthetic unit descriptors with 1% planted copies:
    IVF over fp16 codes (ours) against exact IndexFlatIP (baseline); time, peak RSS, recall."""
    from gpic.bench import figures_line
    from gpic.dedup_bench import bench_dedup as run

    f = run(n, dim, flat_n, cosine_min, nlist, nprobe, seed=seed)
    console.print(f"{n:,} descriptors of {dim}-d, {f['planted_pairs']:,} planted copies (cosine >= {cosine_min + 0.01:.2f}):"
                  f" IVF{f['nlist']} nprobe {nprobe}: {f['ivf_s']:.1f} s, peak {f['ivf_rss_mb']:,} MB, recall "
                  f"{f['ivf_recall']:.4f}; exact flat: {f['flat_measured_s']:.1f} s, peak {f['flat_rss_measured_mb']:,} MB "
                  f"over {f['flat_n']:,}, recall {f['flat_recall']:.4f}", soft_wrap=True)
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
    from gpic.config import load_config
    from gpic.dedup_bench import dedup_quality, quality_photos

    cfg = load_config(config)
    report, summary = dedup_quality(quality_photos(demo), cfg)
    d = cfg["dedup"]
    console.print(f"planted copies of {summary['photos']} photos; layers alone: exact sha256, phash <= "
                  f"{d['phash_max_distance']}, descriptor cosine >= {d['cosine_min']} ({cfg['embed']['model']}); "
                  "removed: in the original's cluster after all layers (links may run through other copies)",
                  soft_wrap=True)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    console.print(f"links between distinct photos: exact {summary['false_links_exact']}, phash "
                  f"{summary['false_links_phash']}, descriptor {summary['false_links_descriptor']}; "
                  f"distinct photos wrongly removed: {summary['distinct_removed']}")
    print(figures_line(summary))
