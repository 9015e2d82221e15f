"""`gpic models fetch` against a hub cache the test fills, in offline mode: the real
snapshot_download path, the sha256 check of a file fetched by URL, and clear refusals of
what is not pinned or cannot be had offline. Nothing here reaches the network."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpic.config import load_config
from gpic.identity import file_sha256
from gpic.inference.checkpoints import FetchError, check_pins, fetch_models, local_path

PRODUCTION = Path(__file__).resolve().parents[2] / "config" / "production.yaml"
GPIC = Path(sys.executable).parent / "gpic"


def fill_hub_cache(cache: Path, repo_id: str, commit: str, folder: Path) -> Path:
    """huggingface_hub's cache layout for one commit of a model repo: content-addressed blobs,
    a snapshot of relative symlinks to them, and refs/main naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def production_models():
    return load_config(PRODUCTION)["models"]


@pytest.fixture
def filled(tmp_path, tiny_models, production_models):
    """The production pins, their hub repos cached under dest with the tiny models' files, and
    the SSCD entry pointing at a local copy of the tiny copy detector (a file:// URL)."""
    from huggingface_hub import scan_cache_dir

    dest = tmp_path / "models"
    models = {name: dict(source) for name, source in production_models.items()}
    for name, tiny in (("qwen3_vl", "vlm"), ("dinov2", "dinov2"), ("siglip", "agreement")):
        fill_hub_cache(dest, models[name]["repo_id"], models[name]["revision"], tiny_models[tiny])
    served = tmp_path / "server" / "sscd_disc_mixup.torchscript.pt"
    served.parent.mkdir()
    shutil.copyfile(tiny_models["copy_detector"], served)
    models["sscd"].update(url=served.as_uri(), sha256=file_sha256(served))
    scanned = scan_cache_dir(dest)  # huggingface_hub reads the filled cache as its own
    assert not scanned.warnings
    assert {(r.repo_id, rev.commit_hash) for r in scanned.repos for rev in r.revisions} == {
        (m["repo_id"], m["revision"]) for m in models.values() if "repo_id" in m}
    return dest, models


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 as huggingface_hub reads it (at import, so the constant is set too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def no_network(*args, **kwargs):
    raise AssertionError("a download was attempted")


def test_fetch_offline_writes_an_overlay_the_loaders_read(filled, tmp_path):
    """The command as a platform team runs it, with HF_HUB_OFFLINE=1: snapshot_download finds
    each pinned commit in the cache, the SSCD file is downloaded and checked, and the overlay's
    paths load with the stages' own loaders under the hub's model ids."""
    dest, models = filled
    config = yaml.safe_load(PRODUCTION.read_text())
    config["models"] = models
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "production.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    run = subprocess.run([str(GPIC), "models", "fetch", "--config", "config/production.yaml", "--dest", "models"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    overlay = yaml.safe_load((tmp_path / "config" / "models.local.yaml").read_text())
    # relative to where it ran, exactly as config/production.yaml names them
    agreement = {"agreement": {"model": config["caption"]["agreement"]["model"]}}
    assert overlay == {stage: {"model": config[stage]["model"]} for stage in ("judge", "embed", "eval")} | {
        "caption": {"model": config["caption"]["model"], **agreement}}
    assert file_sha256(tmp_path / overlay["embed"]["model"]) == models["sscd"]["sha256"]

    from gpic.inference.agreement import AgreementScorer
    from gpic.inference.copy_detector import CopyDetector
    from gpic.inference.dinov2 import DinoV2Features
    from gpic.inference.vlm import VisionLanguageModel

    assert VisionLanguageModel(tmp_path / overlay["judge"]["model"]).model_id == "Qwen/Qwen3-VL-4B-Instruct"
    assert DinoV2Features(tmp_path / overlay["eval"]["model"]).model_id == "facebook/dinov2-large"
    assert CopyDetector(tmp_path / overlay["embed"]["model"]).model_id == "sscd_disc_mixup.torchscript.pt"
    assert AgreementScorer(tmp_path / overlay["caption"]["agreement"]["model"]).model_id == \
        "google/siglip-base-patch16-224"


def test_offline_without_the_commit_cached_fails_clearly(filled, offline, tmp_path):
    _, models = filled
    with pytest.raises(FetchError) as error:
        fetch_models({"qwen3_vl": models["qwen3_vl"]}, tmp_path / "empty")
    message = str(error.value)
    assert "Qwen/Qwen3-VL-4B-Instruct@ebb281ec70b05090aa6165b016eac8ec08e71b17" in message
    assert "offline mode is on (HF_HUB_OFFLINE)" in message and "gpic models fetch" in message


def test_offline_a_file_by_url_is_not_downloaded(production_models, offline, tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(FetchError, match=r"models/sscd: .* is missing and offline mode is on"):
        fetch_models({"sscd": production_models["sscd"]}, tmp_path)


def test_a_file_already_there_with_its_sha256_is_kept_without_a_download(filled, monkeypatch):
    dest, models = filled
    source = models["sscd"]
    path = local_path(dest, "sscd", source)
    path.parent.mkdir(parents=True)
    shutil.copyfile(Path(source["url"].removeprefix("file://")), path)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert [f.path for f in fetch_models({"sscd": source}, dest)] == [path]


def test_a_download_with_another_sha256_is_refused_and_not_kept(filled):
    dest, models = filled
    source = {**models["sscd"], "sha256": "0" * 64}
    with pytest.raises(FetchError, match=r"has sha256 [0-9a-f]{64}, the config pins 0{64}; not kept"):
        fetch_models({"sscd": source}, dest)
    assert not list((dest / "sscd").iterdir())


@pytest.mark.parametrize("field, value, complaint", [
    ("revision", "REPLACE_WITH_COMMIT", "is not a commit"),
    ("revision", "main", "is not a commit"),
    ("sha256", "REPLACE_WITH_SHA256", "is not a sha256"),
])
def test_unpinned_sources_are_refused_before_any_download(production_models, field, value, complaint, tmp_path,
                                                          monkeypatch):
    name = "sscd" if field == "sha256" else "qwen3_vl"
    models = {**production_models, name: {**production_models[name], field: value}}
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(FetchError, match=rf"models/{name}/{field}: '{value}' {complaint}"):
        fetch_models(models, tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_stage_given_two_checkpoints_is_refused(production_models):
    models = {**production_models, "other": {**production_models["dinov2"], "stages": ["eval", "judge"]}}
    with pytest.raises(FetchError, match="models/other/stages: eval is already given models/dinov2"):
        check_pins(models)


def test_the_command_names_the_placeholder_and_exits_1(tmp_path):
    from typer.testing import CliRunner

    from gpic.cli import app

    config = yaml.safe_load(PRODUCTION.read_text())
    config["models"]["dinov2"]["revision"] = "REPLACE_WITH_COMMIT"
    (tmp_path / "production.yaml").write_text(yaml.safe_dump(config))
    run = CliRunner().invoke(app, ["models", "fetch", "--config", str(tmp_path / "production.yaml"),
                                   "--dest", str(tmp_path / "models")])
    assert run.exit_code == 1
    assert "models/dinov2/revision: 'REPLACE_WITH_COMMIT' is not a commit" in run.output
    assert not (tmp_path / "models").exists() and not (tmp_path / "models.local.yaml").exists()


def test_a_config_without_models_says_so():
    with pytest.raises(FetchError, match="the config has no `models:` section"):
        fetch_models(load_config(PRODUCTION.parents[1] / "config.yaml").get("models", {}), "unused")
