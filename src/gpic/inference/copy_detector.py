"""SSCD-style copy detector: a TorchScript descriptor model (the form SSCD is published in)
behind the batch preprocessing SSCD's authors give for it.

SSCD's authors publish two inference transforms: `small_288` (short side resized to 288,
aspect ratio kept) and `skew_320` (resized to a 320x320 square, aspect ratio not kept), the
one that batches. A TorchScript descriptor takes no mask, so padding ragged images to one
shape would let the padding into its pooled descriptor; aspect-keeping batches only group
images whose resized shapes agree, about one per batch on real photos of mixed aspect
ratios. So `describe` uses the square resize and runs any list of images as one batch, and
`describe_per_image` keeps the aspect-keeping path as the reference (`gpic bench embed`
measures both and the cosine between them)."""

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


def _transform(size: int | tuple[int, int]) -> T.Compose:
    return T.Compose([
        T.Resize(size), T.PILToTensor(),  # PIL bilinear with antialiasing, as SSCD's torchvision Resize
        T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class CopyDetector:
    """A TorchScript descriptor model (the form SSCD is published in): every image resized to
    an `image_size` square (SSCD's skew_320), ImageNet normalisation, one forward pass per
    call; descriptors L2-normalised and returned as float16 (what is stored). `forward_calls`
    and `forward_images` count the model's passes and the images they held."""

    def __init__(self, path: str | Path, device: str = "cpu", image_size: int = 320):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"copy-detection model not found: {path}")
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but is SSCD's format
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device
        self.model_id = path.name
        self.revision = weights_revision(path)
        self.image_size = image_size
        self.transform = _transform((image_size, image_size))
        self.forward_calls = self.forward_images = 0

    def _descriptors(self, batch: torch.Tensor) -> np.ndarray:
        self.forward_calls += 1
        self.forward_images += len(batch)
        return torch.nn.functional.normalize(self.model(batch.to(self.device)).float(), dim=1).cpu().numpy()

    @torch.inference_mode()
    def describe(self, images: list) -> np.ndarray:
        """(len(images), dim) float16 from one forward pass over all of them."""
        if not images:
            return np.zeros((0, 0), dtype=np.float16)
        batch = torch.stack([self.transform(im if im.mode == "RGB" else im.convert("RGB")) for im in images])
        return self._descriptors(batch).astype(np.float16)

    @torch.inference_mode()
    def describe_per_image(self, images: list, short_side: int = 288) -> np.ndarray:
        """The aspect-keeping reference (SSCD's small_288): short side resized to `short_side`;
        only images whose resized shapes agree share a forward pass."""
        transform = _transform(short_side)
        tensors = [transform(im if im.mode == "RGB" else im.convert("RGB")) for im in images]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, tensor in enumerate(tensors):
            groups[tuple(tensor.shape)].append(i)
        out: list = [None] * len(tensors)
        for members in groups.values():
            descriptors = self._descriptors(torch.stack([tensors[i] for i in members]))
            for i, descriptor in zip(members, descriptors.astype(np.float16)):
                out[i] = descriptor
        return np.stack(out)
