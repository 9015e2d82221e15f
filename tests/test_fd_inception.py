"""FID (`--features inception`): the FID Inception network (pytorch-fid's modules) against
torchvision's Inception3 (the weights file's layout, the forward up to pool3), against the
hand-typed FID network gpic used before pytorch-fid (the same features on the test photos),
the FID blocks against their written-out definition, pytorch-fid's preprocessing, the loader's refusals, and
`gpic fd-reference` / `gpic fd --features inception` end to end on a random-weight network
of the real architecture loaded through the real path."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from gpic.fd import INCEPTION_PROTOCOL_VERSION, Stats, decode, preprocess_inception
from gpic.inference.inception import FID_WEIGHTS_NAME, FID_WEIGHTS_URL, InceptionFeatures, pool3
from gpic.store import write_tar
from test_fd import crops, independent_fd, shard

from helpers import jpeg_bytes


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from gpic.devkit.tiny_models import build_random_fid_inception

    return build_random_fid_inception(tmp_path_factory.mktemp("inception") / "fid_inception_random.pth")


@pytest.fixture(scope="module")
def network(weights) -> InceptionFeatures:
    return InceptionFeatures(weights)


def test_the_network_has_the_layout_of_pytorch_fids_weights_file(network):
    """pytorch-fid loads its file strictly into torchvision's Inception3 (1008 classes, no
    auxiliary classifier) with the FID blocks swapped in, whose parameters keep their names:
    so the file's keys and shapes are exactly that Inception3's."""
    from torchvision.models.inception import Inception3

    expected = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    ours = network.model.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert sum(v.numel() for k, v in ours.items() if not k.endswith("num_batches_tracked")) == 23_885_392
    assert (network.dim, network.official, network.model_id) == (2048, False, "fid_inception_random.pth")


def test_pool3_is_torchvisions_forward_up_to_the_average_pool(network):
    """Our sequence of modules against torchvision's own Inception3 forward (run to the
    logits), whose avgpool output is captured with a hook."""
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    captured = {}
    handle = network.model.avgpool.register_forward_hook(lambda module, inp, out: captured.update(pool=out))
    try:
        with torch.inference_mode():
            logits = network.model(x)
    finally:
        handle.remove()
    assert logits.shape == (2, 1008)
    expected = captured["pool"].flatten(1).numpy()
    np.testing.assert_allclose(network(x.numpy()), expected, rtol=1e-5, atol=1e-6)
    assert network(x.numpy()).shape == (2, 2048) and np.abs(expected).max() > 0


def hand_typed_fid_inception_v3() -> torch.nn.Module:
    """The FID network as gpic.inference.inception typed it out before it used pytorch-fid's
    modules (kept here only, as the reference the switch must reproduce): torchvision's
    InceptionA/C/E with their `_forward` pooling branch replaced."""
    from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

    def tf_avg_pool(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    def max_pool(x):
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)

    class FIDInceptionA(InceptionA):
        def _forward(self, x):
            branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
            branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(tf_avg_pool(x))]

    class FIDInceptionC(InceptionC):
        def _forward(self, x):
            branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            branch7x7dbl = x
            for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                         self.branch7x7dbl_5):
                branch7x7dbl = conv(branch7x7dbl)
            return [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(tf_avg_pool(x))]

    class FIDInceptionE(InceptionE):
        def __init__(self, in_channels: int, pool):
            super().__init__(in_channels)
            self.pool = pool

        def _forward(self, x):
            branch3x3 = self.branch3x3_1(x)
            branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
            branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
            return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(self.pool(x))]

    net = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE(1280, tf_avg_pool)
    net.Mixed_7c = FIDInceptionE(2048, max_pool)
    return net.eval()


def test_pytorch_fids_network_gives_the_hand_typed_networks_features(weights, network, photos):
    """The network is pytorch-fid's (its FID blocks, its weights URL) and, loaded with the same
    random weights file, gives the features of the hand-typed network it replaced on the test
    photos (JPEGs decoded and preprocessed as `gpic fd` does)."""
    import pytorch_fid.inception as pytorch_fid

    kinds = {name: type(getattr(network.model, name)) for name in ("Mixed_5b", "Mixed_6e", "Mixed_7b", "Mixed_7c")}
    assert kinds == {"Mixed_5b": pytorch_fid.FIDInceptionA, "Mixed_6e": pytorch_fid.FIDInceptionC,
                     "Mixed_7b": pytorch_fid.FIDInceptionE_1, "Mixed_7c": pytorch_fid.FIDInceptionE_2}
    assert FID_WEIGHTS_URL == pytorch_fid.FID_WEIGHTS_URL and FID_WEIGHTS_URL.endswith(FID_WEIGHTS_NAME)
    old = hand_typed_fid_inception_v3()
    old.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    pixels = np.stack([decode(name, jpeg_bytes(photo), preprocess_inception) for name, photo in sorted(photos.items())])
    with torch.inference_mode():
        expected = pool3(old, torch.from_numpy(pixels)).numpy()
    ours = network(pixels)
    assert ours.shape == (4, 2048) and np.abs(expected).max() > 1  # features of a scale where 1e-6 means something
    assert np.abs(ours - expected).max() <= 1e-6


def written_out(block, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The FID blocks as TensorFlow's graph has them: the 3x3 average pool of the pool branch
    leaves the zero padding out of the count, except Mixed_7c (E_2), which max-pools."""
    avg = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    if kind == "A":
        return torch.cat([block.branch1x1(x), block.branch5x5_2(block.branch5x5_1(x)),
                          block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x))),
                          block.branch_pool(avg)], 1)
    if kind == "C":
        dbl = x
        for i in range(1, 6):
            dbl = getattr(block, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([block.branch1x1(x), block.branch7x7_3(block.branch7x7_2(block.branch7x7_1(x))), dbl,
                          block.branch_pool(avg)], 1)
    b3 = block.branch3x3_1(x)
    d3 = block.branch3x3dbl_2(block.branch3x3dbl_1(x))
    pool = F.max_pool2d(x, 3, stride=1, padding=1) if kind == "E_2" else avg
    return torch.cat([block.branch1x1(x), block.branch3x3_2a(b3), block.branch3x3_2b(b3), block.branch3x3dbl_3a(d3),
                      block.branch3x3dbl_3b(d3), block.branch_pool(pool)], 1)


@pytest.mark.parametrize("name,kind,channels", [("Mixed_5b", "A", 192), ("Mixed_6e", "C", 768),
                                                ("Mixed_7b", "E_1", 1280), ("Mixed_7c", "E_2", 2048)])
def test_the_fid_blocks_pool_as_tensorflow_and_differ_from_torchvisions(network, name, kind, channels):
    from torchvision.models import inception as tv

    block = getattr(network.model, name)
    x = torch.rand(1, channels, 7, 7) * 3 - 1  # positive and negative, so max and average pools differ
    with torch.inference_mode():
        ours = block(x)
        np.testing.assert_allclose(ours.numpy(), written_out(block, x, kind).numpy(), rtol=1e-5, atol=1e-5)
        stock = {"A": tv.InceptionA, "C": tv.InceptionC}.get(kind, tv.InceptionE)._forward(block, x)
        assert not torch.allclose(ours, torch.cat(stock, 1), atol=1e-4)  # torchvision's pooling is not FID's


def test_preprocessing_is_pytorch_fids(photos):
    """pytorch-fid: PIL convert('RGB'), torchvision ToTensor, then inside its network
    F.interpolate(size=(299, 299), mode='bilinear', align_corners=False) and 2x - 1."""
    from torchvision.transforms import functional as TF

    grey = io.BytesIO()
    photos["coffee"].convert("L").save(grey, "PNG")
    for data in (jpeg_bytes(photos["astronaut"]), grey.getvalue(), jpeg_bytes(photos["rocket"].resize((120, 90)))):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        batch = TF.to_tensor(image)[None]
        expected = 2 * F.interpolate(batch, size=(299, 299), mode="bilinear", align_corners=False) - 1
        np.testing.assert_array_equal(decode("x", data, preprocess_inception), expected[0].numpy())
    assert preprocess_inception(Image.new("RGB", (299, 299), (0, 255, 0)))[:, 5, 5].tolist() == [-1.0, 1.0, -1.0]


def test_missing_or_mismatched_weights_are_refused_clearly(weights, tmp_path, tiny_models):
    with pytest.raises(FileNotFoundError, match=FID_WEIGHTS_NAME):
        InceptionFeatures(tmp_path / "absent.pth")
    from torchvision.models.inception import Inception3

    stock = tmp_path / "torchvision_inception.pth"  # ImageNet's 1000 classes and an auxiliary head
    torch.save(Inception3(init_weights=False).state_dict(), stock)
    with pytest.raises(ValueError, match=r"network.s weights: unexpected \d+ \(e\.g\. AuxLogits"):
        InceptionFeatures(stock)
    state = torch.load(weights, weights_only=True)
    state["fc.weight"] = state["fc.weight"][:1000]
    del state["Mixed_7c.branch_pool.conv.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"missing 1 \(e\.g\. Mixed_7c.branch_pool.conv.weight\).*wrong shape 1"):
        InceptionFeatures(broken)
    with pytest.raises(ValueError, match="not the FID Inception network's weights: missing"):
        InceptionFeatures(next(tiny_models["dinov2"].glob("*.safetensors")))  # another network's weights
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable state dict"):
        InceptionFeatures(junk)
    # Files saved before BatchNorm counted batches (as old releases) load: eval never reads the counter.
    old = tmp_path / "old.pth"
    torch.save({k: v for k, v in torch.load(weights, weights_only=True).items()
                if not k.endswith("num_batches_tracked")}, old)
    assert InceptionFeatures(old).revision != InceptionFeatures(weights).revision


@pytest.mark.slow  # three 2048-d matrix square roots: about a minute here
def test_gpic_fd_features_inception_end_to_end(weights, network, photos, tmp_path):
    """Reference statistics of two test shards with `fd-reference --features inception`, then
    FID of a sample tar against them: features equal to the network run directly, the
    distance to an independent Frechet computation on them, the protocol recorded, and FID
    and FD-DINOv2 statistics never mixed."""
    from gpic.cli import app

    ref_images = crops(photos["chelsea"], 4, 10) + crops(photos["rocket"], 4, 11)
    sample_images = crops(photos["astronaut"], 5, 12)
    eval_dir = tmp_path / "eval"
    tars = [tmp_path / "gpic_test_00000.tar", tmp_path / "gpic_test_00001.tar"]
    shard(tars[0], ref_images[:4])
    shard(tars[1], ref_images[4:])
    ref = eval_dir / "fid_inception_test.npz"
    run = CliRunner().invoke(app, ["fd-reference", *map(str, tars), "--features", "inception", "--inception-weights",
                                   str(weights), "--out", str(ref), "--batch-size", "4"])
    assert run.exit_code == 0, run.output
    reference = Stats.load(ref)
    assert (reference.protocol_name, reference.protocol_version, reference.count) == ("FID", 1, 8)
    assert sorted(p.name for p in (eval_dir / "test_inception").iterdir()) == ["gpic_test_00000.npz",
                                                                               "gpic_test_00001.npz"]
    samples = tmp_path / "samples.tar"
    write_tar(samples, [(f"{i:03d}.jpg", data) for i, data in enumerate(sample_images)])
    out = tmp_path / "fid.json"
    run = CliRunner().invoke(app, ["fd", str(samples), "--features", "inception", "--inception-weights", str(weights),
                                   "--ref", str(ref), "--out", str(out), "--resamples", "2", "--infinity-points", "3"])
    assert run.exit_code == 0, run.output
    report = json.loads(out.read_text())
    assert f"FID {report['fid']:.4f}" in run.output and "not pytorch-fid's Inception weights" in run.output
    assert (report["protocol_name"], report["protocol_version"], report["features"]) == (
        "FID", INCEPTION_PROTOCOL_VERSION, "inception")
    assert report["official_weights"] is False and "fd_dinov2" not in report
    assert report["samples"]["model_revision"] == reference.model_revision == network.revision
    assert report["interval"]["resamples"] == 2 and report["fd_infinity"]["sizes"] == [2, 3, 5]

    feats = network(np.stack([decode(str(i), b, preprocess_inception) for i, b in enumerate(sample_images)]))
    feats = feats.astype(np.float64)
    ref_feats = network(np.stack([decode(str(i), b, preprocess_inception) for i, b in enumerate(ref_images)]))
    ref_feats = ref_feats.astype(np.float64)
    np.testing.assert_allclose(reference.mean, ref_feats.mean(0), rtol=1e-4, atol=1e-6)
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False)
    assert report["fid"] == pytest.approx(independent_fd(mu, cov, reference.mean, reference.covariance), rel=1e-5)
    assert report["fid"] > 0

    # FID statistics are not FD-DINOv2's, either way round, before any image is decoded.
    run = CliRunner().invoke(app, ["fd", str(samples), "--ref", str(ref), "--model", str(tmp_path)])
    assert run.exit_code == 1 and "FID statistics, not FD-DINOv2" in run.output, run.output
    run = CliRunner().invoke(app, ["fd", str(samples), "--features", "inception", "--ref", str(ref)])
    assert run.exit_code == 1 and "--inception-weights" in run.output, run.output
    run = CliRunner().invoke(app, ["fd", str(samples), "--features", "inception", "--ref", str(ref),
                                   "--inception-weights", str(tmp_path / "absent.pth")])
    assert run.exit_code == 1 and FID_WEIGHTS_NAME in run.output, run.output
