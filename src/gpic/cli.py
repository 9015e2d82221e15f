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


@bench_app.command("pack")
def bench_pack(samples: int = 500, repeat: int = 5) -> None:
    """Pack throughput (MB/s) against a plain standard-library tar copy of the same bytes."""
    from gpic.bench import bench_pack as run, figures_line

    figures = run(samples, repeat)
    console.print(f"pack {figures['samples']} samples ({figures['mb']} MB): ours {figures['ours_mb_per_s']:.0f} MB/s, "
                  f"plain tar copy {figures['baseline_mb_per_s']:.0f} MB/s")
    print(figures_line(figures))
