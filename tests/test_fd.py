"""FD-DINOv2: the distance against an independent computation, the features against the
model's own forward, streaming statistics, the reference npz and the `gpic fd` command, on
real photos and the tiny DINOv2."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gpic.fd import (
    PROTOCOL_VERSION,
    Stats,
    StatsMismatch,
    combine,
    decode,
    empty_stats,
    fd,
    frechet_distance,
    image_stats,
    reference_stats,
    tar_images,
)
from gpic.inference.dinov2 import DinoV2Features
from gpic.store import write_tar

from helpers import jpeg_bytes


def crops(photo: Image.Image, n: int, seed: int) -> list[bytes]:
    """n JPEGs of different crops of one photo (different content, hence different features)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(photo.width // 3, photo.width)), int(rng.integers(photo.height // 3, photo.height))
        left, top = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        out.append(jpeg_bytes(photo.crop((left, top, left + w, top + h)).convert("RGB")))
    return out


@pytest.fixture(scope="module")
def model(tiny_models) -> DinoV2Features:
    return DinoV2Features(tiny_models["dinov2"])


@pytest.fixture(scope="module")
def images(photos) -> dict[str, list[bytes]]:
    """Two sets of 40 JPEGs (more than the tiny model's 32 dimensions): people and a cup
    against a cat and a rocket."""
    return {"a": crops(photos["astronaut"], 20, 0) + crops(photos["coffee"], 20, 1),
            "b": crops(photos["chelsea"], 20, 2) + crops(photos["rocket"], 20, 3)}


@pytest.fixture(scope="module")
def features(model, images) -> dict[str, np.ndarray]:
    return {name: model(np.stack([decode(str(i), b) for i, b in enumerate(blobs)])).astype(np.float64)
            for name, blobs in images.items()}


def stats_of(f: np.ndarray, model: DinoV2Features) -> Stats:
    stats = empty_stats(model)
    stats.update(f)
    return stats


def independent_fd(mu1, s1, mu2, s2) -> float:
    """tr(sqrt(S1 S2)) = tr(sqrt(sqrt(S1) S2 sqrt(S1))), both roots by symmetric eigen-decomposition."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root @ s2 @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def test_distance_matches_an_independent_computation(features):
    a, b = features["a"], features["b"]
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    expected = independent_fd(*args)
    assert expected > 1e-3  # the two sets differ
    assert frechet_distance(*args) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(*args[2:], *args[:2]) == pytest.approx(expected, rel=1e-6)


def test_a_set_against_itself_is_zero_and_a_shift_costs_its_squared_norm(features, model):
    a = features["a"]
    same = stats_of(a, model)
    assert fd(same, same) == pytest.approx(0.0, abs=1e-8 * np.trace(same.covariance))
    shift = np.random.default_rng(0).normal(size=a.shape[1])
    shifted = stats_of(a + shift, model)
    assert fd(shifted, same) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_a_non_finite_square_root_adds_eps_to_both_covariances(features, monkeypatch, caplog):
    from scipy import linalg

    a, b = features["a"][:10], features["b"][:10]  # 10 images in 32 dimensions: singular
    sqrtm, calls = linalg.sqrtm, []

    def failing_once(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else sqrtm(m)

    monkeypatch.setattr(linalg, "sqrtm", failing_once)
    s1, s2, eps = np.cov(a, rowvar=False), np.cov(b, rowvar=False), 1e-2
    got = frechet_distance(a.mean(0), s1, b.mean(0), s2, eps=eps)
    offset = np.eye(len(s1)) * eps
    assert len(calls) == 2 and "not finite" in caplog.text
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    # tr(S1) and tr(S2) stay those of the unshifted covariances, as in pytorch-fid
    shifted = independent_fd(a.mean(0), s1 + offset, b.mean(0), s2 + offset) - 2 * eps * len(s1)
    assert got == pytest.approx(shifted, rel=1e-6)


def test_features_are_the_models_cls_token_after_the_final_norm(model, photos, tiny_models):
    from torchvision.transforms import functional as TF
    from transformers import AutoModel

    grey = io.BytesIO()
    photos["coffee"].convert("L").save(grey, "PNG")  # a greyscale PNG must be converted to RGB
    blobs = [jpeg_bytes(photos["astronaut"]), jpeg_bytes(photos["rocket"]), grey.getvalue()]
    # The protocol written out independently: torchvision on the PIL image, as dgm-eval does.
    pixels = torch.stack([
        TF.normalize(TF.to_tensor(TF.resize(Image.open(io.BytesIO(b)).convert("RGB"), [224, 224],
                                            interpolation=TF.InterpolationMode.BICUBIC)),
                     [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        for b in blobs])
    ours_pixels = np.stack([decode(str(i), b) for i, b in enumerate(blobs)])
    np.testing.assert_allclose(ours_pixels, pixels.numpy(), atol=1e-6)
    reference = AutoModel.from_pretrained(tiny_models["dinov2"]).eval()
    with torch.inference_mode():
        out = reference(pixel_values=pixels)
    np.testing.assert_allclose(model(ours_pixels), out.last_hidden_state[:, 0].numpy(), atol=1e-5)
    assert model(ours_pixels).shape == (3, reference.config.hidden_size)


def shard(path, blobs: list[bytes]) -> None:
    """A webdataset tar like the packed test shards: {key}.jpg and {key}.json."""
    members = []
    for i, data in enumerate(blobs):
        key = hashlib.sha256(data).hexdigest()[:20]
        members += [(f"{key}.jpg", data), (f"{key}.json", json.dumps({"key": key, "i": i}).encode())]
    write_tar(path, members)


def test_streaming_statistics_equal_one_pass(model, features, images, tiny_models, tmp_path, monkeypatch):
    f = features["a"]
    chunks = stats_of(f[:7], model)
    chunks.update(f[7:])
    assert chunks.count == len(f)
    np.testing.assert_allclose(chunks.mean, f.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunks.covariance, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-12)

    blobs = images["a"]
    tars = [tmp_path / "gpic_test_00000.tar", tmp_path / "gpic_test_00001.tar"]
    shard(tars[0], blobs[:15])
    shard(tars[1], blobs[15:])
    cfg = {"model": str(tiny_models["dinov2"]), "device": "cpu", "batch_size": 4}
    out = tmp_path / "eval" / "fd_dinov2_test.npz"
    ref = reference_stats(tars, out, cfg, workers=2)
    one = image_stats((item for t in tars for item in tar_images(t)), model, batch_size=len(blobs))
    assert ref.count == one.count == len(blobs)
    np.testing.assert_allclose(ref.mean, one.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref.covariance, one.covariance, rtol=1e-4, atol=1e-6)
    parts = [Stats.load(tmp_path / "eval" / "test" / f"{t.stem}.npz") for t in tars]
    assert [p.count for p in parts] == [15, len(blobs) - 15]
    np.testing.assert_array_equal(combine(parts).sum_outer, Stats.load(out).sum_outer)

    # Resume: unchanged shards are reused without loading the model; a changed one recomputes alone.
    stamps = [os.stat(tmp_path / "eval" / "test" / f"{t.stem}.npz").st_mtime_ns for t in tars]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every shard was cached")

    with monkeypatch.context() as patch:
        patch.setattr("gpic.fd.DinoV2Features", no_model)
        again = reference_stats(tars, out, cfg)
    np.testing.assert_array_equal(again.sum_outer, ref.sum_outer)
    shard(tars[1], blobs[15:20])
    changed = reference_stats(tars, out, cfg)
    assert changed.count == 20
    assert os.stat(tmp_path / "eval" / "test" / "gpic_test_00000.npz").st_mtime_ns == stamps[0]
    assert os.stat(tmp_path / "eval" / "test" / "gpic_test_00001.npz").st_mtime_ns != stamps[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models, images):
    """Reference statistics of set b from one tar shard, as the eval rule makes them."""
    work = tmp_path_factory.mktemp("ref")
    tar = work / "gpic_test_00000.tar"
    shard(tar, images["b"])
    out = work / "fd_dinov2_test.npz"
    reference_stats([tar], out, {"model": str(tiny_models["dinov2"]), "device": "cpu", "batch_size": 16})
    return out, tar


def test_reference_npz_round_trips_its_metadata(reference, tiny_models):
    from gpic.identity import weights_revision

    out, tar = reference
    stats = Stats.load(out)
    assert (stats.model_id, stats.model_revision) == ("dinov2-tiny", weights_revision(tiny_models["dinov2"]))
    assert stats.protocol_version == PROTOCOL_VERSION and stats.count == 40
    assert stats.sources == [{"name": tar.name, "sha256": hashlib.sha256(tar.read_bytes()).hexdigest(), "count": 40}]
    with np.load(out, allow_pickle=False) as data:  # readable by other tools, no pickles
        np.testing.assert_array_equal(data["mean"], stats.mean)
        np.testing.assert_array_equal(data["covariance"], stats.covariance)
        assert data["covariance"].dtype == np.float64 and int(data["count"]) == 40
        assert "bicubic" in str(data["protocol"]).lower()


@pytest.mark.parametrize("field,value", [("model_revision", "0123456789abcdef"), ("protocol_version", 2)])
def test_mismatched_revision_or_protocol_is_refused_naming_it(reference, field, value, tmp_path):
    ref = Stats.load(reference[0])
    other = Stats.load(reference[0])
    setattr(other, field, value)
    with pytest.raises(StatsMismatch, match=field):
        fd(other, ref)
    other.save(tmp_path / "other.npz")
    from gpic.cli import app

    run = CliRunner().invoke(app, ["fd", str(tmp_path / "other.npz"), "--ref", str(reference[0])])
    assert run.exit_code == 1 and field in run.output and str(value) in run.output, run.output


def test_gpic_fd_on_a_folder_a_tar_and_an_npz(reference, images, tiny_models, tmp_path):
    from gpic.cli import app
    from gpic.devkit.tiny_models import build_tiny_dinov2

    ref, _ = reference
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, data in enumerate(images["a"][:12]):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    tar = tmp_path / "samples.tar"
    write_tar(tar, [(f"{i:03d}.jpg", data) for i, data in enumerate(images["a"][:12])])
    reports = {}
    for name, samples in (("folder", folder), ("tar", tar)):
        out = tmp_path / f"{name}.json"
        run = CliRunner().invoke(app, ["fd", str(samples), "--ref", str(ref), "--model", str(tiny_models["dinov2"]),
                                       "--out", str(out), "--batch-size", "5"])
        assert run.exit_code == 0, run.output
        reports[name] = json.loads(out.read_text())
        assert f"FD-DINOv2 {reports[name]['fd_dinov2']:.4f}" in run.output
    folder_report, tar_report = reports["folder"], reports["tar"]
    assert tar_report["samples"]["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert tar_report["reference"]["sha256"] == hashlib.sha256(ref.read_bytes()).hexdigest()
    assert folder_report["samples"]["kind"] == "folder" and len(folder_report["samples"]["sha256"]) == 64
    assert folder_report["fd_dinov2"] == pytest.approx(tar_report["fd_dinov2"], rel=1e-6)
    assert folder_report["fd_dinov2"] > 0
    for report in reports.values():
        assert report["samples"]["count"] == 12 and report["reference"]["count"] == 40
        assert report["protocol_version"] == PROTOCOL_VERSION
        assert report["samples"]["model_revision"] == report["reference"]["model_revision"]

    # A different checkpoint is refused before any image is decoded, naming the revision.
    other = build_tiny_dinov2(tmp_path / "dinov2-other", seed=1)
    run = CliRunner().invoke(app, ["fd", str(tar), "--ref", str(ref), "--model", str(other)])
    assert run.exit_code == 1 and "model_revision" in run.output, run.output
    run = CliRunner().invoke(app, ["fd", str(tar), "--ref", str(ref)])
    assert run.exit_code == 1 and "--model" in run.output, run.output


# ---------------------------------------------------------------------------
# The interval, FD-infinity and a subset of test shards
# ---------------------------------------------------------------------------


def test_gpic_fd_reports_a_reproducible_interval_and_fd_infinity_from_features_computed_once(
        reference, images, tiny_models, tmp_path, monkeypatch):
    from gpic.cli import app
    from gpic.fd import compare, infinity_sizes

    ref, _ = reference
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, data in enumerate(images["a"][:24]):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    forwarded = []
    real_call = DinoV2Features.__call__

    def counting(self, pixels):  # the real forward, counted
        forwarded.append(len(pixels))
        return real_call(self, pixels)

    monkeypatch.setattr(DinoV2Features, "__call__", counting)
    kept = tmp_path / "samples_features.npz"
    report = compare(folder, ref, tiny_models["dinov2"], batch_size=8, resamples=50, seed=3, save_features=kept)
    assert sum(forwarded) == 24  # each image once: the interval and FD-infinity resample stored features
    interval, infinity = report["interval"], report["fd_infinity"]
    assert (interval["resamples"], interval["seed"], interval["level"]) == (50, 3, 0.95)
    assert interval["low"] < interval["high"] and interval["std"] > 0 and interval["bias"] > 0
    assert infinity["sizes"] == infinity_sizes(24).tolist() and infinity["seed"] == 3
    assert len(infinity["fds"]) == len(infinity["sizes"]) == 15
    assert infinity["fds"][-1] == pytest.approx(report["fd_dinov2"], rel=1e-6)  # all 24: the protocol's FD
    assert any("fewer than twice the 32 feature dimensions" in note for note in report["notes"])

    # The saved features give the same numbers without the model; another seed, other numbers.
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for stored features")

    monkeypatch.setattr("gpic.fd.DinoV2Features", no_model)
    again = compare(kept, ref, resamples=50, seed=3)
    assert (again["interval"], again["fd_infinity"]) == (interval, infinity)
    assert again["fd_dinov2"] == pytest.approx(report["fd_dinov2"], rel=1e-12)
    other = compare(kept, ref, resamples=50, seed=4)
    assert other["interval"]["low"] != interval["low"] and other["fd_dinov2"] == again["fd_dinov2"]
    plain = tmp_path / "plain.npz"
    Stats.load(kept).save(plain)  # statistics alone
    alone = compare(plain, ref)
    assert alone["interval"] is None and alone["fd_infinity"] is None and "--save-features" in alone["notes"][0]

    out = tmp_path / "fd.json"
    run = CliRunner().invoke(app, ["fd", str(kept), "--ref", str(ref), "--resamples", "20", "--seed", "1",
                                   "--infinity-points", "5", "--out", str(out)])
    assert run.exit_code == 0, run.output
    saved = json.loads(out.read_text())
    assert (saved["interval"]["resamples"], saved["interval"]["seed"], saved["fd_infinity"]["seed"]) == (20, 1, 1)
    assert len(saved["fd_infinity"]["sizes"]) == 5 and saved["protocol_name"] == "FD-DINOv2"
    i = saved["interval"]
    assert (f"FD-DINOv2 {saved['fd_dinov2']:.4f} [95% CI {i['low']:.4f}-{i['high']:.4f}" in run.output
            and f"FD-DINOv2-infinity {saved['fd_infinity']['value']:.4f}" in run.output), run.output


def test_reference_shards_combine_exactly_and_the_report_states_what_was_used(model, images, tiny_models, tmp_path):
    from gpic.cli import app
    from gpic.fd import compare, parse_shards

    blobs = images["b"]
    tars = [tmp_path / f"gpic_test_{i:05d}.tar" for i in range(3)]
    for tar, part in zip(tars, (blobs[:10], blobs[10:25], blobs[25:]), strict=True):
        shard(tar, part)
    ref = tmp_path / "eval" / "fd_dinov2_test.npz"
    full = reference_stats(tars, ref, {"model": str(tiny_models["dinov2"]), "device": "cpu", "batch_size": 8})
    samples = image_stats(((str(i), b) for i, b in enumerate(images["a"])), model)
    samples.save(tmp_path / "samples.npz")

    everything = compare(tmp_path / "samples.npz", ref, reference_shards="0-2", resamples=0)
    assert everything["fd_dinov2"] == fd(samples, full) and everything["reference"]["count"] == 40

    some = compare(tmp_path / "samples.npz", ref, reference_shards="2,0", resamples=0)
    direct = image_stats((item for t in (tars[2], tars[0]) for item in tar_images(t)), model)
    assert some["fd_dinov2"] == pytest.approx(fd(samples, direct), rel=1e-6)
    described = some["reference"]
    assert (described["kind"], described["count"], described["shards_used"], described["shards_available"]) == (
        "shards", 25, 2, 3)
    assert described["files"] == ["gpic_test_00002.npz", "gpic_test_00000.npz"] and len(described["sha256"]) == 64
    assert compare(tmp_path / "samples.npz", ref, resamples=0)["reference"]["shards_used"] == 3

    run = CliRunner().invoke(app, ["fd", str(tmp_path / "samples.npz"), "--ref", str(tmp_path / "elsewhere.npz"),
                                   "--reference-shards", "1", "--reference-shard-dir", str(tmp_path / "eval" / "test")])
    assert run.exit_code == 0 and "15 images from 1 of 3 test shards (1)" in run.output, run.output
    run = CliRunner().invoke(app, ["fd", str(tmp_path / "samples.npz"), "--ref", str(ref), "--reference-shards", "1,5"])
    assert run.exit_code == 1 and "test shard(s) [5]" in run.output and "0-2" in run.output, run.output
    assert parse_shards("0-3,8,2") == [0, 1, 2, 3, 8]
    with pytest.raises(ValueError, match="0-7"):
        parse_shards("first")
