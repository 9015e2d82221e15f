"""Developer commands: tiny random-weight models and the demo corpus (gpic.devkit)."""

from __future__ import annotations

from pathlib import Path

import typer

from gpic.cli.common import app, console, models_app


@models_app.command("tiny")
def models_tiny(out_dir: Path, seed: int = 0) -> None:
    """Build tiny random-weight Qwen3-VL, copy-detection and DINOv2 models in OUT_DIR."""
    from gpic.devkit.tiny_models import build_tiny_models

    for name, path in build_tiny_models(out_dir, seed=seed).items():
        console.print(f"{name}: {path}")


@app.command()
def demo(out_dir: Path = typer.Argument(Path("resources/demo")), seed: int = 0) -> None:
    """Build the bundled demo corpus (real photos shipped by installed packages) in OUT_DIR."""
    from gpic.devkit.demo import build_demo

    build_demo(out_dir, seed=seed)
    console.print(f"demo corpus: {out_dir}")
