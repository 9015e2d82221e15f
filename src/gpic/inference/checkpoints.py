"""Production checkpoints from their pinned sources (config `models:`), for `gpic models fetch`.

The stages read only local paths (`judge.model`, ...), so a run never downloads. This module
downloads each pinned checkpoint once: a hub repo at a commit with huggingface_hub's
`snapshot_download` (into the hub cache layout, so the model id and commit stay readable in
the path and an interrupted download resumes), a single file by URL checked against its
sha256. It then writes the local paths as an overlay config that Snakemake merges over the
production config."""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import yaml

from gpic.config import ModelSource
from gpic.identity import file_sha256
from gpic.store import atomic_path

COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
# Pickled weights are never downloaded (the loaders read safetensors only and would refuse
# them), nor other frameworks' copies: they would cost gigabytes and nothing reads them.
IGNORED = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack", "*.onnx", "*.gguf"]
DOWNLOAD_TIMEOUT_S = 60


class FetchError(RuntimeError):
    """A checkpoint that cannot be had as pinned; the message says which and what to do."""


@dataclass(frozen=True)
class Fetched:
    name: str
    source: str  # repo_id@revision, or the URL
    path: Path
    stages: tuple[str, ...]


def check_pins(models: dict[str, ModelSource]) -> None:
    """Refuse, before downloading anything, what would not pin the weights: a revision that is
    not a commit (a branch moves; a placeholder was never filled in), a sha256 that is not 64
    hex digits, or a stage that two checkpoints claim."""
    if not models:
        raise FetchError("the config has no `models:` section: nothing to fetch (config/production.yaml has one)")
    problems, claimed = [], {}
    for name, source in models.items():
        if "repo_id" in source and not COMMIT.fullmatch(source["revision"]):
            problems.append(f"models/{name}/revision: {source['revision']!r} is not a commit (40 hex digits); "
                            f"pin the commit of {source['repo_id']} (the hub shows it under 'Files and versions')")
        if "url" in source and not SHA256.fullmatch(source["sha256"]):
            problems.append(f"models/{name}/sha256: {source['sha256']!r} is not a sha256 (64 hex digits) "
                            f"of {source['url']}")
        for stage in source["stages"]:
            if stage in claimed:
                problems.append(f"models/{name}/stages: {stage} is already given models/{claimed[stage]}")
            claimed.setdefault(stage, name)
    if problems:
        raise FetchError("refusing to fetch unpinned checkpoints:\n  " + "\n  ".join(problems))


def local_path(dest: str | Path, name: str, source: ModelSource) -> Path:
    """Where a checkpoint lands under dest: huggingface_hub's cache layout for a repo, and
    dest/NAME/<file name> for a URL. The production config's stage keys use these paths."""
    if "repo_id" in source:
        return Path(dest) / f"models--{source['repo_id'].replace('/', '--')}" / "snapshots" / source["revision"]
    return Path(dest) / name / PurePosixPath(urlparse(source["url"]).path).name


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_repo(name: str, source: ModelSource, dest: Path) -> Path:
    """The repo's snapshot at the pinned commit, downloaded into dest unless already there."""
    from huggingface_hub import snapshot_download

    repo, revision = source["repo_id"], source["revision"]
    try:
        path = Path(snapshot_download(repo, revision=revision, cache_dir=dest, ignore_patterns=IGNORED))
    except (OSError, ValueError) as error:  # not cached and no hub (or no such repo or commit)
        why = ("offline mode is on (HF_HUB_OFFLINE)" if _offline() else "the hub could not be reached or refused")
        raise FetchError(
            f"models/{name}: {repo}@{revision} is not in {dest} and {why}: {type(error).__name__}: {error}\n"
            f"  Run `gpic models fetch` where huggingface.co (or the HF_ENDPOINT mirror) is reachable, "
            f"or copy a hub cache holding this commit into {dest}.") from error
    expected = local_path(dest, name, source)
    if path.resolve() != expected.resolve():  # the layout the production config names
        raise FetchError(f"models/{name}: snapshot_download returned {path}, expected {expected}")
    if not any(path.rglob("*.safetensors")):
        raise FetchError(f"models/{name}: {repo}@{revision} has no safetensors weights (pickled ones are not "
                         f"downloaded: the loaders refuse them)")
    return expected


def fetch_file(name: str, source: ModelSource, dest: Path) -> Path:
    """The file at the pinned sha256: kept when already there, else downloaded, checked, then
    renamed into place (a mismatch is refused and nothing is left behind)."""
    url, want = source["url"], source["sha256"]
    path = local_path(dest, name, source)
    if path.is_file() and file_sha256(path) == want:
        return path
    scheme = urlparse(url).scheme
    if _offline() and scheme not in ("file", ""):
        state = "has a different sha256" if path.exists() else "is missing"
        raise FetchError(f"models/{name}: {path} {state} and offline mode is on (HF_HUB_OFFLINE): cannot download "
                         f"{url}. Run `gpic models fetch` online, or copy the file there (sha256 {want}).")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_path(path) as tmp:
            with tmp.open("wb") as out:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != want:
                raise FetchError(f"models/{name}: {url} has sha256 {digest.hexdigest()}, the config pins {want}; "
                                 f"not kept. Check the URL, or the pin if the file was replaced upstream.")
    except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: not a URL
        raise FetchError(f"models/{name}: cannot download {url}: {error}. Run `gpic models fetch` where it is "
                         f"reachable, or copy the file to {path} (sha256 {want}).") from error
    return path


def fetch_models(models: dict[str, ModelSource], dest: str | Path) -> list[Fetched]:
    """Every checkpoint of config `models:` under dest, pins checked first."""
    check_pins(models)
    dest = Path(dest)
    fetched = []
    for name, source in models.items():
        if "repo_id" in source:
            path, origin = fetch_repo(name, source, dest), f"{source['repo_id']}@{source['revision']}"
        else:
            path, origin = fetch_file(name, source, dest), source["url"]
        fetched.append(Fetched(name, origin, path, tuple(source["stages"])))
    return fetched


# Where a `models:` entry's stage puts its path: the config section holding that `model` key.
MODEL_KEYS = {"judge": ("judge",), "caption": ("caption",), "agreement": ("caption", "agreement"),
              "embed": ("embed",), "eval": ("eval",)}


def overlay(fetched: list[Fetched]) -> dict[str, dict]:
    """The config keys the fetched checkpoints fill in, e.g. {"caption": {"model": path,
    "agreement": {"model": path}}}."""
    out: dict[str, dict] = {}
    for item in fetched:
        for stage in item.stages:
            section = out
            for name in MODEL_KEYS[stage]:
                section = section.setdefault(name, {})
            section["model"] = str(item.path)
    return out


def write_overlay(fetched: list[Fetched], path: str | Path, config_path: str | Path) -> Path:
    """An overlay config to pass after the production config (Snakemake merges it key by key)."""
    header = (f"# Written by `gpic models fetch --config {config_path}`: local paths of its pinned checkpoints.\n"
              f"# snakemake --profile profiles/slurm --configfile {config_path} {path}\n")
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(overlay(fetched), sort_keys=False))
    return Path(path)

