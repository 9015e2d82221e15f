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
                                                                          "which are finished, then stop."),
                    licences: bool = typer.Option(False, "--licences", help="flickr only: ask getInfo for the live "
                                                  "licence list and print what the licence gate makes of each id "
                                                  "beside the built-in table, then stop."),
                    report: bool = typer.Option(False, "--report", help="Count the licence strings of the finished "
                                                "parts: per raw text and URL, per canonical id, and the ones the "
                                                "gate cannot read, then stop.")) -> None:
    """Enumerate licensed images from a source's API or dump into manifest parts (one parquet
    file per upload-time window or dump chunk) that partition reads. Resumable: finished parts
    are kept, an unfinished one resumes from its last page. Exit 1 naming the parts that failed."""
    from gpic import collect
    from gpic.collect.common import CollectError
    from gpic.config import load_config
    from gpic.logs import progress

    cfg = load_config(config)
    out = out or RESULTS_LAYOUT.collection(collector)
    if licences:
        _print_live_licences(collector, cfg)
        return
    if report:
        _print_licence_report(collector, out)
        return
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


def _print_live_licences(collector: str, cfg: dict) -> None:
    """Flickr's licence list now, one id a line: name, URL, the gate's reading, the built-in
    table's, whether it is searched, and any drift. Exit 1 when an id drifted."""
    from gpic import collect
    from gpic.collect import flickr_api
    from gpic.collect.common import CollectError
    from gpic.review import printable

    if collector != "flickr":
        console.print(f"[red]--licences asks Flickr's live licence list: it needs the flickr collector, not "
                      f"{collector!r} (for collected strings use --report)[/red]", soft_wrap=True)
        raise typer.Exit(2)
    section = collect.section(cfg["collect"], collector)
    try:
        ctx = collect.Context(cfg["collect"].get("user_agent", ""), cfg["collect"])
        verdicts = flickr_api.licence_verdicts(flickr_api.live_licences(section, ctx), "licences",
                                               cfg["licenses"]["allow"])
    except (CollectError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    typer.echo("id\tname\turl\tgate\ttable\tsearched\tdrift")
    for v in verdicts:
        typer.echo("\t".join([v["id"], printable(v["name"]), printable(v["url"]), v["canonical"] or "-",
                              v["table"] or "-", "yes" if v["allowed"] else "no", printable(v["drift"]) or "ok"]))
    drifted = [v["id"] for v in verdicts if v["drift"]]
    typer.echo(f"{len(verdicts)} licences, {len(drifted)} drifted" + (f": ids {', '.join(drifted)}" * bool(drifted)))
    if drifted:
        raise typer.Exit(1)


def _print_licence_report(collector: str, out: Path) -> None:
    """A finished collection's licence strings as the gate reads them (gpic.collect.licence_report)."""
    from gpic import collect
    from gpic.collect.licence_report import licence_counts
    from gpic.review import printable

    summary = out / collect.SUMMARY
    if not summary.exists():
        console.print(f"[red]{summary} does not exist: collect {collector} first (or give --out)[/red]",
                      soft_wrap=True)
        raise typer.Exit(2)
    counts = licence_counts(collect.part_files(summary))
    typer.echo(f"{collector}: {counts['rows']} rows ({counts['refused']} refused by the collector), "
               f"{len(counts['pairs'])} distinct licence strings")
    typer.echo("\nper canonical id:")
    for license_id, n in counts["canonical"].most_common():
        typer.echo(f"{n}\t{license_id}")
    typer.echo("\nper licence string (rows, text, url):")
    for (text, url), n in counts["pairs"].most_common():
        typer.echo(f"{n}\t{printable(text) or '-'}\t{printable(url) or '-'}")
    typer.echo(f"\nunreadable ({len(counts['unreadable'])}):")
    for (text, url), reason in sorted(counts["unreadable"].items(), key=lambda kv: -counts["pairs"][kv[0]]):
        typer.echo(f"{counts['pairs'][(text, url)]}\t{printable(reason)}")
