"""The FID Inception network (pool3 features for the classic FID protocol, gpic.fd): the
InceptionV3 graph of TensorFlow's 2015-12-05 FID model as pytorch-fid ports it, built from
pytorch-fid's own modules (`pytorch_fid.inception`, pytorch-fid 0.3.0), and its weights loaded
from a local file (`pt_inception-2015-12-05-6726825d.pth`, pytorch-fid's release; never
downloaded here).

The FID graph differs from torchvision's InceptionV3 in: 1008 classes (the fc layer, unused
for features, is part of the weights file), no auxiliary classifier, and the pooling branch
of the mixed blocks: TensorFlow's average pool does not count the zero padding
(`count_include_pad=False`) in blocks 5b-5d (pytorch-fid's FIDInceptionA), 6b-6e
(FIDInceptionC) and 7b (FIDInceptionE_1), and block 7c (FIDInceptionE_2) max-pools where
torchvision average-pools. The feature is the 2048-d global average of Mixed_7c's output
(pool3).

pytorch-fid's `fid_inception_v3()` ends by downloading the weights
(`load_state_dict_from_url`) and its `InceptionV3` wrapper calls it, so neither is used:
`fid_inception_v3` below does its construction (torchvision's Inception3 with pytorch-fid's
FID blocks swapped in, the same modules and state-dict keys) without weights, and
`InceptionFeatures` loads and checks the local file itself. `pool3` runs the modules that
pytorch-fid's `InceptionV3` (output block 3, no resize, no normalisation) runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpic.identity import file_sha256

# pytorch-fid's weights file; torch.hub names release files by their sha256's first 8 hex digits.
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"
IMAGE_SIZE = 299
DIM = 2048


def fid_inception_v3():
    """The FID InceptionV3 in eval mode, built as pytorch-fid's `fid_inception_v3()` builds it
    (torchvision's Inception3 with 1008 classes, no auxiliary classifier and pytorch-fid's FID
    blocks) but without its download: the weights are PyTorch's default random initialisation
    until a state dict is loaded."""
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
    from torchvision.models.inception import Inception3

    net = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net.eval()


def pool3(net, x):
    """(n, 3, 299, 299) input in [-1, 1] -> (n, 2048) pool3 features: the network up to
    Mixed_7c and its global average (the fc layer is not run)."""
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
        x = getattr(net, name)(x)
    return x.flatten(1)


def load_state_dict(path: Path) -> dict:
    """A state dict from a local file; pickled code is refused (`weights_only`)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, not a torch file, a pickle with code
        raise ValueError(f"{path}: not a loadable state dict ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of the FID Inception network")
    return state


def weights_file_revision(path: str | Path) -> str:
    """A weights file's revision: the first 16 hex digits of its sha256 (pytorch-fid's file:
    6726825d...), so a copy under another name is the same model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID Inception weights not found: {path} (pytorch-fid's {FID_WEIGHTS_NAME}, from {FID_WEIGHTS_URL}; "
            "download it where there is a network and pass its local path)")
    return file_sha256(path)[:16]


class InceptionFeatures:
    """The FID Inception network with weights from a local file, and its identity: the file's
    name, a revision (the first 16 hex digits of its sha256, so a copy under another name is
    the same model) and whether it is pytorch-fid's published file (sha256 starting 6726825d)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import torch

        path = Path(path)
        self.revision = weights_file_revision(path)
        state = load_state_dict(path)
        net = fid_inception_v3()
        expected = net.state_dict()
        for key in expected:  # files saved before BatchNorm had this counter lack it; eval never reads it
            if key.endswith(".num_batches_tracked") and key not in state:
                state[key] = expected[key]
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shapes = sorted(k for k in set(expected) & set(state)
                        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or shapes:
            details = "; ".join(f"{label} {len(keys)} (e.g. {keys[0]})" for label, keys in
                                (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys)
            raise ValueError(f"{path}: not the FID Inception network's weights: {details}")
        net.load_state_dict(state, strict=True)
        self.model = net.float().eval().to(device)
        self.device = device
        self.model_id = path.name
        self.official = self.revision.startswith(FID_WEIGHTS_SHA256_PREFIX)
        self.dim = DIM

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, 299, 299) float32 in [-1, 1] -> (n, 2048) float32 pool3 features."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
            return pool3(self.model, batch).float().cpu().numpy()
