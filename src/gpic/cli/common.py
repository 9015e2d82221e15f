"""The `gpic` command's application objects, shared by the command modules."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="GPIC pipeline tools.", no_args_is_help=True, pretty_exceptions_show_locals=False)
models_app = typer.Typer(help="Model checkpoints.", no_args_is_help=True)
app.add_typer(models_app, name="models")
bench_app = typer.Typer(help="Benchmarks: ours and the baseline in one run; the last line is key=value figures.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()
