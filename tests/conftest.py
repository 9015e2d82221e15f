"""Shared fixtures: real photos shipped by scikit-image, encoded as real files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

torch.set_num_threads(1)  # two threads on these shared two-core machines ran far slower


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from gpic.models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def base_config() -> dict:
    from gpic.config import validate_config

    return validate_config({"sources": ["unused.csv"], "shards": 4, "judge": {"model": "m"},
                            "embed": {"model": "m"}, "caption": {"model": "m"}})


def blank(size=(500, 400), value=128) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8))
