"""`gpic collect`: stage 1 by hand, the same code the workflow's collect rule runs."""

from __future__ import annotations

from pathlib import Path

import typer

from gpic.cli.common import app, console
from gpic.layout import RESULTS_LAYOUT


@app.command("collect")
def collect_command(collector: str = typer.Argument(..., help="commons, commons-dump, flickr or yfcc."),
                    config: Path = typer.Option(Path("config.yaml"), help="Config with a `collect:` section."),
                    out: Path = typer.Option(None, help="Folder of the parts (default: the workflow's, "
                                                        "results/collect/COLLECTOR)."),
                    part: list[str] = typer.Option(None, help="Collect only this part (repeatable)."),
                    list_parts: bool = typer.Option(False, "--list", help="Print the parts the config gives and "
                                                                          "which are finished, then stop.")) -> None:
    """Enumerate licensed images from a source's API or dump into manifest parts (one parquet
    file per upload-time window or dump chunk) that partition reads. Resumable: finished parts
    are kept, an unfinished one resumes from its last page. Exit 1 naming the parts that failed."""
    from gpic import collect
    from gpic.collect.common import CollectError
    from gpic.config import load_config
    from gpic.logs import progress

    cfg = load_config(config)
    out = out or RESULTS_LAYOUT.collection(collector)
    try:
        names = collect.parts(cfg["collect"], collector)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    if list_parts:
        for name in names:
            done = (out / f"{name}.parquet").exists()
            console.print(f"{name}\t{'finished' if done else 'pending'}")
        return
    try:
        with progress():
            summary = collect.collect(collector, cfg["collect"], out, allow=cfg["licenses"]["allow"],
                                      only=part or None)
    except (CollectError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{collector}: {summary['rows']} rows in {summary['parts']} parts under {out}")
