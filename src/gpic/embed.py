"""The embed stage: exact hash, perceptual hash and copy-detection descriptor per image,
the three signals the global dedup stage compares."""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2 as T

from gpic.images import load_batches
from gpic.models import weights_revision
from gpic.store import read_tar, stamp, write_table

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CopyDetector:
    """A TorchScript descriptor model (the form SSCD is published in) with SSCD's inference
    preprocessing: short side resized to `image_size` (288), aspect ratio kept, ImageNet
    normalisation; descriptors L2-normalised and returned as float16 (what is stored)."""

    def __init__(self, path: str | Path, device: str = "cpu", image_size: int = 288, center_crop: bool = False):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"copy-detection model not found: {path}")
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but is SSCD's format
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device
        self.model_id = path.name
        self.revision = weights_revision(path)
        crop = [T.CenterCrop(image_size)] if center_crop else []
        self.transform = T.Compose([
            T.Resize(image_size), T.PILToTensor(), *crop,  # PIL bilinear on the short side, as SSCD's Resize(288)
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


def embed_shard(survivors: list[str], manifest: pd.DataFrame, fetch_records: pd.DataFrame,
                filter_table: pd.DataFrame, raw_tar: str | Path, cfg: dict, out_path: str | Path,
                detector: CopyDetector | None = None) -> pd.DataFrame:
    """One row per surviving key: split, size, sha256, 64-bit pHash (hex), fp16 descriptor bytes.
    `detector` is a loaded CopyDetector, or None to load cfg['model'] when there is work."""
    facts = (manifest[["key", "split"]]
             .merge(fetch_records[["key", "sha256", "raw_member"]], on="key")
             .merge(filter_table[["key", "width", "height"]], on="key"))
    facts = facts[facts["key"].isin(set(survivors))].set_index("key")
    rows = []
    if len(facts):
        detector = detector or CopyDetector(cfg["model"], cfg["device"], cfg["image_size"], cfg["center_crop"])
        raw = read_tar(raw_tar)
        for keys, images, failures in load_batches(raw, facts["raw_member"].to_dict(), cfg["batch_size"]):
            rows += [{"key": k, "embed_status": "failed", "embed_reason": r} for k, r in failures]
            descriptors = detector.describe(images) if images else []
            for key, image, descriptor in zip(keys, images, descriptors):
                rows.append({"key": key, "embed_status": "ok", "embed_reason": "", "phash": str(imagehash.phash(image)),
                             "descriptor": descriptor.tobytes()})
            log.info("embedded %d/%d", len(rows), len(facts))
    table = pd.DataFrame(rows, columns=["key", "embed_status", "embed_reason", "phash", "descriptor"])
    table = table.merge(facts.drop(columns="raw_member").reset_index(), on="key", how="left").sort_values("key")
    extra = {"model_id": detector.model_id, "model_revision": detector.revision} if len(facts) else {"model_id": "", "model_revision": ""}
    table = stamp(table, "embed", cfg, **extra)
    write_table(table, out_path)
    return table


def read_descriptors(table: pd.DataFrame) -> np.ndarray:
    """The fp16 descriptor column (non-null rows) as an (n, d) float32 matrix."""
    from gpic.dedup import descriptor_matrix

    return descriptor_matrix(table["descriptor"].dropna().tolist()).astype(np.float32)
