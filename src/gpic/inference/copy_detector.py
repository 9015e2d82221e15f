"""SSCD-style copy detector: a TorchScript descriptor model (the form SSCD is published in)
behind the same preprocessing SSCD's authors use at inference."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2 as T

from gpic.identity import weights_revision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CopyDetector:
    """A TorchScript descriptor model (the form SSCD is published in) with SSCD's inference
    preprocessing: short side resized to `image_size` (288), aspect ratio kept, ImageNet
    normalisation; descriptors L2-normalised and returned as float16 (what is stored)."""

    def __init__(self, path: str | Path, device: str = "cpu", image_size: int = 288):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"copy-detection model not found: {path}")
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but is SSCD's format
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device
        self.model_id = path.name
        self.revision = weights_revision(path)
        self.transform = T.Compose([
            T.Resize(image_size), T.PILToTensor(),  # PIL bilinear on the short side, as SSCD's Resize(288)
            T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    @torch.inference_mode()
    def describe(self, images: list) -> np.ndarray:
        """(len(images), dim) float16; images whose resized shapes agree run as one batch."""
        tensors = [self.transform(im) for im in images]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, tensor in enumerate(tensors):
            groups[tuple(tensor.shape)].append(i)
        out: list = [None] * len(tensors)
        for members in groups.values():
            batch = torch.stack([tensors[i] for i in members]).to(self.device)
            descriptors = torch.nn.functional.normalize(self.model(batch).float(), dim=1).cpu().numpy()
            for i, descriptor in zip(members, descriptors.astype(np.float16)):
                out[i] = descriptor
        return np.stack(out)
