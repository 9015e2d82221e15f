"""DINOv2 features for FD-DINOv2: a local checkpoint loaded with transformers `AutoModel`
(safetensors only) and its identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpic.identity import weights_revision
from gpic.inference import checkpoint_name, quiet_progress_bars


class DinoV2Features:
    """A local DINOv2 checkpoint (transformers `AutoModel`) and its identity: the folder name
    (the repo id in the hub cache layout) and the hash of its weight files (gpic.identity.weights_revision)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import torch
        from transformers import AutoModel

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"DINOv2 model folder not found: {path}")
        with quiet_progress_bars():
            # safetensors only: a pickled checkpoint is refused, never unpickled
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32, local_files_only=True,
                                                   use_safetensors=True).eval().to(device)
        self.device = device
        self.model_id = checkpoint_name(path)
        self.revision = weights_revision(path)
        self.dim = int(self.model.config.hidden_size)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, 224, 224) float32 -> (n, dim) float32 CLS features."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
            out = self.model(pixel_values=batch).last_hidden_state[:, 0]
            return out.float().cpu().numpy()
