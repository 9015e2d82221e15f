"""Helpers shared by the tests (fixtures live in conftest.py): real files, and Snakemake run
on a work folder with the repository's workflow."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_SHARDS = [f"{i:05d}" for i in range(8)]

DATA = ("*.tar", "*.parquet", "README.md", "SHA256SUMS", "partition.json")

def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()

def blank(size=(500, 400), value=128) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8))

def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=work)

TINY_MODEL_OF = {"judge": "vlm", "caption": "vlm", "embed": "copy_detector", "eval": "dinov2"}  # stage -> tiny model


def use_tiny_models(config: dict, tiny_models: dict) -> dict:
    """The config's model paths pointed at the session's tiny models (the agreement scorer too)."""
    for stage, model in TINY_MODEL_OF.items():
        if stage in config:
            config[stage]["model"] = str(tiny_models[model])
    config["caption"].setdefault("agreement", {})["model"] = str(tiny_models["agreement"])
    return config


def demo_workspace(work: Path, tiny_models: dict) -> Path:
    """A folder with the demo corpus and the demo config pointing at the tiny models."""
    from gpic.devkit.demo import build_demo

    build_demo(work / "resources" / "demo")
    config = use_tiny_models(yaml.safe_load((REPO / "config.yaml").read_text()), tiny_models)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def small_run(work: Path, tiny_models: dict, file_root: Path, **settings) -> Path:
    """The demo config over two raw shards, no val/test keys, the tiny models, file:// URLs
    below `file_root`, and `settings` on top; Snakemake run to the end in `work`."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(shards=2, shards_per_job=2,
                  splits={"val_fraction": 0.0, "test_fraction": 0.0, "val_shards": 1, "test_shards": 1}, **settings)
    config["fetch"]["file_roots"] = [str(file_root)]
    use_tiny_models(config, tiny_models)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(work, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    return work

def contents(results: Path) -> dict[str, bytes | str]:
    """Every data file of a run, to compare two runs; fetch tables without fetched_at (when
    the bytes were read)."""
    from gpic.store import read_table

    out = {}
    for pattern in DATA:
        for path in sorted(results.rglob(pattern)):
            if path.parent.name == "fetch":
                out[str(path.relative_to(results))] = read_table(path).drop(columns="fetched_at").to_csv(index=False)
            else:
                out[str(path.relative_to(results))] = path.read_bytes()
    return out
