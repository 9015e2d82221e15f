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
               ref: Path = typer.Option(RESULTS_LAYOUT.reference, help="Reference statistics (.npz)."),
               model: Path | None = typer.Option(None, help="DINOv2 folder; needed unless SAMPLES is an .npz."),
               out: Path | None = typer.Option(None, help="Write the result and its inputs' sha256 here (JSON)."),
               device: str = "cpu", batch_size: int = 32,
               workers: int = typer.Option(1, help="Decode threads.")) -> None:
    """FD-DINOv2 of SAMPLES against the test split's reference statistics (docs/evaluation.md).
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


@app.command("fd-reference")
def fd_reference(shards: list[str] = typer.Argument(..., help="Local test tars, folders or globs, ours or GPIC's "
                                                                "(gpic_test_*.tar)."),
                 model: Path = typer.Option(..., help="DINOv2 folder."),
                 out: Path = typer.Option(RESULTS_LAYOUT.reference, help="Reference statistics to write (.npz)."),
                 shard_dir: Path | None = typer.Option(None, help="Per-shard statistics (default OUT's folder/test)."),
                 device: str = "cpu", batch_size: int = 64,
                 workers: int = typer.Option(1, help="Decode threads.")) -> None:
    """FD-DINOv2 reference statistics of test tars: what the eval_reference job computes from
    our packed test split, from any webdataset tars (GPIC's published test shards included:
    images are read by name, whatever the member order). Per-shard statistics are reused."""
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    from gpic.fd import reference_stats
    from gpic.loader import resolve_shards

    try:
        tars = resolve_shards(list(shards))
        remote = [t for t in tars if not isinstance(url_to_fs(t)[0], LocalFileSystem)]
        if remote:
            raise ValueError(f"reference statistics read local tars (sha256 and random access): download "
                             f"{remote[0]} first")
        stats = reference_stats(tars, out, {"model": str(model), "device": device, "batch_size": batch_size},
                                workers, shard_dir)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{out}: {stats.count} images from {len(tars)} shard(s), {stats.model_id} @ {stats.model_revision}",
                  soft_wrap=True)
