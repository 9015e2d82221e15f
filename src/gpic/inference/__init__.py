"""Model wrappers: each loads a local checkpoint with its library's own loader (no stubs) and
records the checkpoint's identity. `vlm` (Qwen3-VL: judge and captioner), `copy_detector`
(SSCD descriptors), `dinov2` (FD-DINOv2 features), `inception` (pytorch-fid's Inception, for
the classic FID protocol)."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def quiet_progress_bars():
    """Silence transformers' progress bars, restoring the previous setting."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def checkpoint_name(path: Path) -> str:
    """A checkpoint's name from its folder: the repo id in huggingface_hub's cache layout
    (.../models--Org--Name/snapshots/<commit>, where `gpic models fetch` puts hub models),
    else the folder's name."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name[len("models--"):].replace("--", "/")
    return path.name
