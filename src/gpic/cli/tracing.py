"""Tracing one image and a run's final states (lineage, summary, dropped, status) and the
rebuild of damaged blocks."""

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
           deep: bool = typer.Option(False, "--deep", help="Also hash every recorded file (reads all of them)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Per job: how many blocks (shards_per_job shards each) or files are done, which are
    pending, and which are damaged (a file the block's stamp records is missing, resized,
    changed after the job, or with --deep no longer its sha256). `gpic rebuild` repairs the
    damaged ones; `snakemake -n` also knows what is stale. Exit 1 when a block is damaged."""
    from gpic.config import load_config
    from gpic.review.status import status as job_status

    rows = job_status(results, load_config(config), deep=deep)
    damaged = [(row["job"], block, found) for row in rows for block, found in row["damaged"].items()]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("job", "done", "pending", "damaged", "first pending or damaged", title=f"{results}: jobs on disk")
        for row in rows:
            named = [*row["damaged"], *row["pending"]]
            shown = ", ".join(named[:4]) + (f" (+{len(named) - 4} more)" if len(named) > 4 else "")
            table.add_row(row["job"], f"{row['done']}/{row['total']}", str(len(row["pending"])),
                          str(len(row["damaged"])), shown)
        console.print(table)
        for job, block, found in damaged:
            for line in found:
                console.print(f"damaged: {job} {block}: {printable(line)}", markup=False, soft_wrap=True)
        if damaged:
            console.print(f"repair: gpic rebuild --results {results} --config {config} [-- SNAKEMAKE ARGUMENTS, "
                          f"e.g. --profile profiles/slurm]", markup=False, soft_wrap=True)
    if damaged:
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def rebuild(ctx: typer.Context, results: Path = RESULTS_LAYOUT.root, config: Path = Path("config.yaml"),
            shard: list[int] = typer.Option(None, help="Only the block holding this raw shard (repeatable)."),
            block: list[str] = typer.Option(None, help="Only this block, e.g. 00000-00009 (repeatable)."),
            job: list[str] = typer.Option(None, help="Only this block job: prepare, assess, caption or provenance."),
            deep: bool = typer.Option(False, "--deep", help="Also find files whose content changed at the same "
                                                            "size (hashes every recorded file)."),
            dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show the jobs and their reason, run nothing."),
            snakemake: str = typer.Option(None, help="The snakemake command (default: the one installed beside "
                                                     "gpic, else snakemake on the PATH).")) -> None:
    """Rebuild every damaged block (`gpic status`): runs `snakemake --forcerun` of the damaged
    blocks' stamps with those stamps as targets, then, step by step, the jobs downstream whose
    inputs' content changed, each command with the arguments after `--` (e.g. `-- --profile
    profiles/slurm`) and printed first. The damaged jobs run again to the same bytes
    (`--dry-run` shows them with their reason); nothing runs again whose inputs are the same."""
    import shlex
    import shutil
    import subprocess
    import sys

    from gpic.config import load_config
    from gpic.layout import JOBS, block_names
    from gpic.review.status import MAX_STEPS, damaged_stamps, stale_on_their_own

    cfg = load_config(config)
    blocks = block_names(cfg["shards"], cfg["shards_per_job"])
    if unknown := [j for j in job or [] if j not in JOBS]:
        console.print(f"[red]--job {unknown[0]!r} is not a block job: {', '.join(JOBS)}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    if unknown := [b for b in block or [] if b not in blocks]:
        console.print(f"[red]--block {unknown[0]!r} is not a block of this config (first: {blocks[0]})[/red]",
                      soft_wrap=True)
        raise typer.Exit(2)
    if unknown := [s for s in shard or [] if not 0 <= s < cfg["shards"]]:
        console.print(f"[red]--shard {unknown[0]} is not a raw shard of this config (0-{cfg['shards'] - 1})[/red]",
                      soft_wrap=True)
        raise typer.Exit(2)
    wanted = [*(block or []), *(blocks[s // cfg["shards_per_job"]] for s in shard or [])] or None
    damaged = damaged_stamps(results, cfg, jobs=job or None, blocks=wanted, deep=deep)
    for stamp, found in damaged:
        print(f"damaged: {stamp}: {printable('; '.join(found))}")
    if not damaged:
        print("nothing damaged" + (" in the blocks asked for" if wanted or job else ""))
        return
    beside = Path(sys.executable).parent / "snakemake"
    runner = shlex.split(snakemake) if snakemake else [str(beside) if beside.exists() else "snakemake"]
    if not shutil.which(runner[0]):
        console.print(f"[red]{runner[0]}: not found; give --snakemake[/red]", soft_wrap=True)
        raise typer.Exit(2)
    stamps = [str(stamp) for stamp, _ in damaged]

    def run(*options: str, targets: list[str] = (), quiet: bool = False) -> subprocess.CompletedProcess:
        command = [*runner, *options, *ctx.args, *(["--", *targets] if targets else [])]
        print(f"running: {shlex.join(command)}", flush=True)
        done = subprocess.run(command, capture_output=quiet, text=True)
        if done.returncode:
            if quiet:
                print(done.stdout + done.stderr, end="")
            raise typer.Exit(done.returncode)
        return done

    forced = ["--forcerun", *stamps]
    if dry_run:
        run("--dry-run", *forced, targets=stamps)
        return
    run(*forced, targets=stamps)
    # Downstream, step by step: each run holds only the jobs stale on their own, so a job whose
    # inputs were rewritten with the same bytes is not run (see gpic.review.status).
    for _ in range(MAX_STEPS):
        if not (targets := stale_on_their_own(run("--dry-run", quiet=True).stdout)):
            break
        run(targets=targets)
    run()  # whatever is left, as the workflow's own run would
