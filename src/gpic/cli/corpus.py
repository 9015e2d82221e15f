"""Commands over a finished corpus: verify, index, publish, cost, report, FD-DINOv2."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gpic.cli.common import app, console
from gpic.layout import RESULTS_LAYOUT, Layout


@app.command()
def verify(results: Path = typer.Argument(RESULTS_LAYOUT.root),
           packed_only: bool = typer.Option(False, "--packed-only",
                                            help="RESULTS is a folder of tars alone (e.g. GPIC's published shards "
                                                 "indexed by `gpic index`): no provenance to check."),
           index_dir: str = typer.Option(None, help="With --packed-only: where `gpic index --out` wrote.")) -> None:
    """Check a results folder: tars against SHA256SUMS, each index against its tar, no key
    packed twice, every key of every shard in exactly one final state. Exit 1 naming problems.
    With --packed-only, a folder of tars: index against tar, records of either schema, no key
    twice, SHA256SUMS if present; the checks it cannot run are named."""
    from gpic.review.verify import verify as check
    from gpic.review.verify import verify_packed

    if packed_only:
        problems, notes = verify_packed(results, index_dir)
        for note in notes:
            console.print(f"[yellow]note: {note}[/yellow]", soft_wrap=True)
    else:
        problems = check(results)
        if not Layout(results).packed_root.exists() and next(Path(results).rglob("*.tar"), None):
            console.print(f"[yellow]{results} has tars but no packed/ folder: for a folder of tars alone "
                          "(GPIC's shards), run `gpic verify --packed-only`[/yellow]", soft_wrap=True)
    for problem in problems:
        console.print(f"[red]{problem}[/red]", soft_wrap=True)
    if problems:
        console.print(f"[red]{len(problems)} problem(s) in {results}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]{results}: verified[/green]")


@app.command("index")
def index_command(shards: list[str] = typer.Argument(..., help="Tars, folders (their *.tar), globs or fsspec URLs "
                                                                 "(hf://datasets/stanford-vision-lab/gpic/*.tar)."),
                  out: str = typer.Option(None, help="Write the indexes into this folder (a cache) instead of "
                                                     "beside the tars; give it to the loader as index_dir."),
                  force: bool = typer.Option(False, "--force", help="Rebuild indexes that already exist."),
                  workers: int = typer.Option(4, help="Tars read at once (remote reads wait on the network).")) -> None:
    """Build the parquet index (member offsets and sizes, the record's fields) of webdataset
    tars that lack one, by one sequential read of each tar, records in our schema or GPIC's.
    A tar that is not a webdataset is named with the member at fault and the others go on;
    exit 1 at the end listing the failures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gpic.index import index_shards
    from gpic.loader import resolve_shards

    try:
        urls = resolve_shards(list(shards))
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("tars", total=len(urls))
        try:
            outcomes = index_shards(urls, out, force, workers, done=lambda _: progress.advance(task))
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]", soft_wrap=True)
            raise typer.Exit(1) from None
    failed = [o for o in outcomes if o.error]
    built = [o for o in outcomes if not o.error and not o.skipped]
    console.print(f"indexed {len(built)} tar(s), {sum(o.samples for o in built):,} samples"
                  f"{', into ' + out if out else ''}; {sum(o.skipped for o in outcomes)} already had an index"
                  f"{' (--force rebuilds)' if any(o.skipped for o in outcomes) else ''}", soft_wrap=True)
    if failed:
        for outcome in failed:
            console.print(f"[red]{outcome.error}[/red]", soft_wrap=True)
        console.print(f"[red]{len(failed)} of {len(urls)} tar(s) could not be indexed[/red]")
        raise typer.Exit(1)


@app.command()
def publish(results: Path = typer.Argument(RESULTS_LAYOUT.root),
            repo_id: str = typer.Option("", help="Hub dataset repo, e.g. org/gpic."),
            dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, with sizes."),
            public: bool = typer.Option(False, "--public", help="Create the repo public (default private).")) -> None:
    """Verify RESULTS, then upload RESULTS/packed to the Hugging Face hub (resumable)."""
    from gpic.review.verify import verify as check
    from gpic.stages.publish import published_files, upload

    problems = check(results)
    if problems:
        console.print(f"[red]refusing to publish: `gpic verify {results}` finds {len(problems)} problem(s), "
                      f"first: {problems[0]}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    packed = Layout(results).packed_root
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


@app.command()
def cost(results: Path = RESULTS_LAYOUT.root, config: Path = Path("config.yaml"),
         out: Path = typer.Option(None, help="Also write the figures as JSON here.")) -> None:
    """CPU core-hours, GPU-hours, wall time, money, storage and egress at the target scale of
    config `cost:`, from this run's benchmark files; says which figures are measured and which
    assumed."""
    from gpic.config import load_config
    from gpic.review.cost import estimate
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
                  + ", ".join(f"{tier} {e['tb']:.2f} TB ${e['usd']:,.0f}"
                              for tier, e in report["egress_per_download"].items()))
    for note in report["notes"]:
        console.print(f"[dim]{note}[/dim]")
    if out:
        write_json(report, out)


@app.command("report")
def report_command(results: Path = RESULTS_LAYOUT.root, config: Path = Path("config.yaml"),
                   out: Path = RESULTS_LAYOUT.report) -> None:
    """Write the run report (one self-contained HTML page) from a finished run."""
    from gpic.config import load_config
    from gpic.review.report import write_report

    console.print(f"wrote {write_report(results, load_config(config), out)}")


@app.command("fd")
def fd_command(samples: Path = typer.Argument(..., help="A folder of images, a tar shard or an .npz of statistics."),
               ref: Path | None = typer.Option(None, help="Reference statistics (.npz); default "
                                                          "results/eval/fd_dinov2_test.npz, fid_inception_test.npz "
                                                          "with --features inception."),
               model: Path | None = typer.Option(None, help="DINOv2 folder; needed unless SAMPLES is an .npz."),
               out: Path | None = typer.Option(None, help="Write the result and its inputs' sha256 here (JSON)."),
               device: str = "cpu", batch_size: int = 32,
               workers: int = typer.Option(1, help="Decode threads."),
               features: str = typer.Option("dinov2", help="dinov2 (FD-DINOv2) or inception (FID, pytorch-fid's "
                                                           "protocol, for model cards that quote FID)."),
               inception_weights: Path | None = typer.Option(None, help="With --features inception: the local FID "
                                                                        "Inception weights file "
                                                                        "(pt_inception-2015-12-05-6726825d.pth)."),
               reference_shards: str | None = typer.Option(None, help="Score against these test shards' statistics "
                                                                      "only, e.g. 0-7 or 0-3,9 (a quick look)."),
               reference_shard_dir: Path | None = typer.Option(None, help="Per-shard statistics for "
                                                                          "--reference-shards (default REF's folder"
                                                                          "/test, /test_inception for FID)."),
               resamples: int = typer.Option(200, help="Bootstrap resamples for the interval (0: none)."),
               level: float = typer.Option(0.95, help="Interval coverage."),
               seed: int = typer.Option(0, help="Seed of the bootstrap and the FD-infinity subsets."),
               infinity_points: int = typer.Option(15, help="Subset sizes for FD-infinity (0: none)."),
               save_features: Path | None = typer.Option(None, help="Also write the samples' statistics with "
                                                                    "their per-image features (.npz): as SAMPLES "
                                                                    "later, they give the interval without the "
                                                                    "model.")) -> None:
    """FD-DINOv2 (or FID with --features inception) of SAMPLES against the test split's
    reference statistics, with a bootstrap interval and FD at infinite sample size
    (docs/evaluation.md). Refuses statistics made with another protocol, model revision or
    protocol version."""
    from gpic.fd import PROTOCOLS, compare
    from gpic.store import write_json

    try:
        if features not in PROTOCOLS:
            raise ValueError(f"--features must be one of {sorted(PROTOCOLS)}, not {features!r}")
        protocol = PROTOCOLS[features]
        if features == "inception" and model is not None:
            raise ValueError("--features inception reads the network from --inception-weights, not --model")
        if features != "inception" and inception_weights is not None:
            raise ValueError("--inception-weights goes with --features inception")
        network = inception_weights if features == "inception" else model
        ref = ref or RESULTS_LAYOUT.reference.parent / protocol.reference_file
        report = compare(samples, ref, network, device, batch_size, workers, features=features,
                         reference_shards=reference_shards, shard_dir=reference_shard_dir, resamples=resamples,
                         seed=seed, infinity_points=infinity_points, level=level, save_features=save_features)
    except (ValueError, FileNotFoundError) as exc:  # StatsMismatch is a ValueError
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    s, r = report["samples"], report["reference"]
    used = (f" from {r['shards_used']} of {r['shards_available']} test shards ({r['shards']})" if r["kind"] == "shards"
            else f" from {r['shards_used']} test shard(s)" if r["shards_used"] else "")
    console.print(f"{s['kind']} {s['path']}: {s['count']} images; reference {r['path']}: {r['count']} images{used}; "
                  f"{s['model_id']} @ {s['model_revision']}, {report['protocol_name']} protocol "
                  f"v{report['protocol_version']}", soft_wrap=True)
    if report.get("official_weights") is False:
        console.print("[yellow]these are not pytorch-fid's Inception weights (sha256 6726825d...): the FID does not "
                      "compare with published ones[/yellow]", soft_wrap=True)
    for note in report["notes"]:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    if out:
        write_json(report, out)
    name, line = report["protocol_name"], f"{report['protocol_name']} {report[protocol.key]:.4f}"
    if report["interval"]:
        i = report["interval"]
        line += f" [{i['level']:.0%} CI {i['low']:.4f}-{i['high']:.4f}, sd {i['std']:.4f}, {i['resamples']} resamples]"
    if report["fd_infinity"]:
        f = report["fd_infinity"]
        line += f"; {name}-infinity {f['value']:.4f} ({len(f['sizes'])} sizes {f['sizes'][0]}-{f['sizes'][-1]})"
    print(line)


@app.command("fd-reference")
def fd_reference(shards: list[str] = typer.Argument(..., help="Local test tars, folders or globs, ours or GPIC's "
                                                                "(gpic_test_*.tar)."),
                 model: Path | None = typer.Option(None, help="DINOv2 folder."),
                 out: Path | None = typer.Option(None, help="Reference statistics to write (.npz); default "
                                                            "results/eval/fd_dinov2_test.npz, "
                                                            "fid_inception_test.npz for FID."),
                 shard_dir: Path | None = typer.Option(None, help="Per-shard statistics (default OUT's folder/test, "
                                                                  "/test_inception for FID)."),
                 device: str = "cpu", batch_size: int = 64,
                 workers: int = typer.Option(1, help="Decode threads."),
                 features: str = typer.Option("dinov2", help="dinov2 (FD-DINOv2) or inception (FID)."),
                 inception_weights: Path | None = typer.Option(None, help="With --features inception: the local FID "
                                                                          "Inception weights file.")) -> None:
    """FD-DINOv2 (or, with --features inception, FID) reference statistics of test tars: what
    the eval_reference job computes from our packed test split, from any webdataset tars
    (GPIC's published test shards included: images are read by name, whatever the member
    order). Per-shard statistics are reused."""
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    from gpic.fd import PROTOCOLS, reference_stats
    from gpic.loader import resolve_shards

    try:
        if features not in PROTOCOLS:
            raise ValueError(f"--features must be one of {sorted(PROTOCOLS)}, not {features!r}")
        network = inception_weights if features == "inception" else model
        if network is None:
            raise ValueError("--inception-weights is needed with --features inception" if features == "inception"
                             else "--model (the DINOv2 folder) is needed")
        if features == "inception" and model is not None:
            raise ValueError("--features inception reads the network from --inception-weights, not --model")
        out = out or RESULTS_LAYOUT.reference.parent / PROTOCOLS[features].reference_file
        tars = resolve_shards(list(shards))
        remote = [t for t in tars if not isinstance(url_to_fs(t)[0], LocalFileSystem)]
        if remote:
            raise ValueError(f"reference statistics read local tars (sha256 and random access): download "
                             f"{remote[0]} first")
        stats = reference_stats(tars, out, {"model": str(network), "device": device, "batch_size": batch_size},
                                workers, shard_dir, features)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{out}: {stats.count} images from {len(tars)} shard(s), {stats.model_id} @ {stats.model_revision}",
                  soft_wrap=True)
