"""Commands over a finished corpus: verify, publish, cost, report, FD-DINOv2."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gpic.cli.common import app, console
from gpic.layout import RESULTS_LAYOUT, Layout


@app.command()
def verify(results: Path = typer.Argument(RESULTS_LAYOUT.root)) -> None:
    """Check a results folder: tars against SHA256SUMS, each index against its tar, no key
    packed twice, every key of every shard in exactly one final state. Exit 1 naming problems."""
    from gpic.review.verify import verify as check

    problems = check(results)
    for problem in problems:
        console.print(f"[red]{problem}[/red]", soft_wrap=True)
    if problems:
        console.print(f"[red]{len(problems)} problem(s) in {results}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]{results}: verified[/green]")


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
