"""Shared fixtures: real photos shipped by scikit-image, tiny local models, the demo run.
Helper functions live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import skimage.data
import torch
from PIL import Image

from helpers import DEMO_SHARDS, demo_workspace, snakemake

torch.set_num_threads(1)  # two threads on these shared two-core machines ran far slower

WORKFLOW_FIXTURES = {"demo", "provenance", "slurm_run"}  # each runs Snakemake


def pytest_collection_modifyitems(config, items):
    """A test that runs the workflow through a fixture must be marked slow, so that
    `make test-fast` never starts Snakemake."""
    unmarked = [item.nodeid for item in items
                if WORKFLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError(f"these tests run the workflow but are not marked slow: {unmarked}")


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skimage.data, name)())
            for name in ("astronaut", "coffee", "chelsea", "rocket")}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from gpic.devkit.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def base_config() -> dict:
    from gpic.config import validate_config

    return validate_config({"sources": ["unused.csv"], "shards": 4, "judge": {"model": "m"},
                            "embed": {"model": "m"}, "caption": {"model": "m"}})


@pytest.fixture(scope="session")
def demo(tmp_path_factory, tiny_models) -> Path:
    """The whole demo workflow, run once per test session through Snakemake."""
    work = demo_workspace(tmp_path_factory.mktemp("demo"), tiny_models)
    run = snakemake(work, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    return work


@pytest.fixture(scope="session")
def provenance(demo) -> pd.DataFrame:
    from gpic.store import read_table

    return pd.concat([read_table(demo / "results" / "provenance" / f"{s}.parquet").assign(shard=s)
                      for s in DEMO_SHARDS])
