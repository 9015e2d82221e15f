"""Tracing one image and a run's final states: lineage, summary, dropped, status."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from gpic.cli.common import app, console
from gpic.layout import RESULTS_LAYOUT
from gpic.review import printable


@app.command()
def lineage(key: str, results: Path = RESULTS_LAYOUT.root, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print everything recorded about one image: source, licence, fetch, scores, verdicts,
    dedup cluster, captions and the tar it was packed into (or why it was dropped)."""
    from gpic.stages.provenance import lineage as trace

    try:
        record = trace(key, results)
    except (KeyError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    final = record.get("provenance") or {}
    console.rule(Text(f"{printable(key)}  shard {record['shard']}  ->  {final.get('state', '?')}", style="bold"))
    for section, values in record.items():
        if not isinstance(values, dict):
            continue
        table = Table(title=section, show_header=False, title_justify="left", expand=True)
        table.add_column("field", style="cyan", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in values.items():
            shown = json.dumps(value, default=str) if isinstance(value, (list, dict)) else printable(value)
            table.add_row(name, Text(shown))  # Text: rich would read "[...]" in source metadata as markup
        console.print(table)


@app.command()
def summary(results: Path = RESULTS_LAYOUT.root, as_json: bool = typer.Option(False, "--json")) -> None:
    """Final states per shard and per stage/reason, and how many judged keys got scores that
    decide nothing (a warning when most did); fails if any shard's counts do not add up."""
    from rich.console import Console

    from gpic.stages.provenance import summarise

    report = summarise(results)
    judge = report["judge"]
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        table = Table("shard", "in", "packed", "dropped", "failed", title="final states")
        for shard, c in report["shards"].items():
            table.add_row(shard, *(str(c[k]) for k in ("in", "packed", "dropped", "failed")))
        console.print(table)
        reasons = Table("state", "stage", "reason", "keys", title="by stage and reason")
        for row in report["reasons"]:
            reasons.add_row(row["state"], row["stage"], Text(printable(row["reason"])), str(row["keys"]))
        console.print(reasons)
        console.print(f"judge scores: {judge['judged']} keys judged, {judge['low_mass']} answering neither word "
                      f"({judge['low_mass_fraction']:.0%}), {judge['undecided']} undecided "
                      f"({judge['undecided_fraction']:.0%})", soft_wrap=True)
    if judge["warning"]:  # under --json on stderr, so that stdout stays JSON and a person still sees it
        shown = Text(f"WARNING: {judge['warning']}", style="bold yellow")
        (Console(stderr=True) if as_json else console).print(shown, soft_wrap=True)
    if not report["conserved"]:
        shards = report["unconserved"]
        console.print(f"[red]counts do not conserve (in, distinct keys, rows, packed + dropped + failed differ) in "
                      f"{len(shards)} shard(s): {', '.join(shards[:20])}{' ...' if len(shards) > 20 else ''}[/red]",
                      soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def dropped(reason: str = typer.Option("", help="Text the drop reason contains (any case); empty lists all."),
            shard: str | None = typer.Option(None, help="Only this shard, e.g. 00003."),
            results: Path = RESULTS_LAYOUT.root,
            sheet: Path | None = typer.Option(None, help="Also draw a contact sheet of the images (.jpg or .png)."),
            limit: int = typer.Option(120, help="Most images on the contact sheet.")) -> None:
    """List dropped keys (key, shard, stage, reason; tab-separated) for human review; their
    raw bytes stay in RESULTS/raw/{shard}.tar, and --sheet draws them with key and reason."""
    from gpic.review.audit import contact_sheet
    from gpic.review.audit import dropped as find

    try:
        rows = find(results, reason, shard)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    print("key\tshard\tstage\treason")
    for row in rows.itertuples():
        print(f"{row.key}\t{row.shard}\t{row.stage}\t{printable(row.reason)}")
    if sheet:
        contact_sheet(rows.head(limit), results, sheet)
        console.print(f"contact sheet of {min(limit, len(rows))} image(s): {sheet}", soft_wrap=True)
    console.print(f"{len(rows)} dropped key(s)")


@app.command()
def status(results: Path = RESULTS_LAYOUT.root, config: Path = Path("config.yaml"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Per job: how many blocks (shards_per_job shards each) or files are done and which are
    pending, from what is on disk. `snakemake -n` also knows what is stale."""
    from gpic.config import load_config
    from gpic.review.status import status as job_status

    rows = job_status(results, load_config(config))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("job", "done", "pending", "first pending", title=f"{results}: jobs on disk")
    for row in rows:
        shown = ", ".join(row["pending"][:4]) + (
            f" (+{len(row['pending']) - 4} more)" if len(row["pending"]) > 4 else "")
        table.add_row(row["job"], f"{row['done']}/{row['total']}", str(len(row["pending"])), shown)
    console.print(table)
