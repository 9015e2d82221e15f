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
