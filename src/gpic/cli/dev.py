"""Model and demo commands: production checkpoints at their pinned revisions (gpic.inference.checkpoints),
tiny random-weight models and the demo corpus (gpic.devkit)."""

from __future__ import annotations

from pathlib import Path

import typer

from gpic.cli.common import app, console, models_app


@models_app.command("tiny")
def models_tiny(out_dir: Path, seed: int = 0) -> None:
    """Build tiny random-weight Qwen3-VL, copy-detection, DINOv2 and SigLIP (agreement) models in OUT_DIR."""
    from gpic.devkit.tiny_models import build_tiny_models

    for name, path in build_tiny_models(out_dir, seed=seed).items():
        console.print(f"{name}: {path}")


@models_app.command("fetch")
def models_fetch(config: Path = typer.Option(Path("config/production.yaml"), help="Config with a `models:` section."),
                 dest: Path = typer.Option(Path("models"), help="Folder the checkpoints are downloaded into."),
                 overlay: Path = typer.Option(None, help="Overlay config to write; default models.local.yaml "
                                                         "beside --config.")) -> None:
    """Download each checkpoint of config `models:` at its pinned revision into DEST (hub repos
    with snapshot_download, files by URL with their sha256 checked), then write an overlay config
    that points the stages' `model` keys at them. Offline, only what DEST already holds is used."""
    from gpic.config import load_config
    from gpic.inference.checkpoints import FetchError, fetch_models, write_overlay

    try:
        fetched = fetch_models(load_config(config).get("models", {}), dest)
    except FetchError as error:
        console.print(str(error), style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    for item in fetched:
        console.print(f"{item.name} ({', '.join(item.stages)}): {item.source} -> {item.path}",
                      soft_wrap=True, markup=False)
    out = write_overlay(fetched, overlay or config.parent / "models.local.yaml", config)
    console.print(f"overlay: {out}; run with --configfile {config} {out}", soft_wrap=True, markup=False)


@app.command()
def demo(out_dir: Path = typer.Argument(Path("resources/demo")), seed: int = 0) -> None:
    """Build the bundled demo corpus (real photos shipped by installed packages) in OUT_DIR."""
    from gpic.devkit.demo import build_demo

    build_demo(out_dir, seed=seed)
    console.print(f"demo corpus: {out_dir}")
