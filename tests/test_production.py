"""The production kit's config: it validates, it is GPIC's scale and models, it means the same
whether read alone (`gpic status`, `gpic cost`) or merged by Snakemake over the demo's
config.yaml, and its model paths are where `gpic models fetch` puts the pinned checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from gpic import collect
from gpic.collect.common import require_user_agent
from gpic.config import load_config, validate_config
from gpic.inference.checkpoints import COMMIT, SHA256, check_pins, local_path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ROOT / "config" / "production.yaml"
SCHEMA = yaml.safe_load((ROOT / "src" / "gpic" / "schemas" / "config.schema.yaml").read_text())


def test_production_config_is_gpics_scale_on_gpus():
    c = load_config(PRODUCTION)
    assert (c["shards"], c["shards_per_job"]) == (8000, 10)
    assert (c["splits"]["val_shards"], c["splits"]["test_shards"]) == (32, 128)
    packed = c["cost"]["target"]["captioned"] + c["cost"]["target"]["heldout"]  # splits are drawn by key
    val, test = (c["splits"][f"{split}_fraction"] * packed for split in ("val", "test"))
    assert abs(val / 200_000 - 1) < 0.05 and abs(test / 1_000_000 - 1) < 0.05  # GPIC's 200K and 1M
    assert {c[s]["device"] for s in ("judge", "embed", "caption", "eval")} == {"cuda"}
    levels = SCHEMA["properties"]["caption"]["properties"]["levels"]["default"]
    assert c["caption"]["levels"] == levels  # the schema's GPIC-like budgets, 12 to 256 tokens
    assert c["fetch"]["file_roots"] == []


def test_production_collects_from_the_commons_dumps_and_the_flickr_api():
    c = load_config(PRODUCTION)
    assert (c["sources"], c["collect"]["collectors"]) == ([], ["commons-dump", "flickr"])
    windows = collect.parts(c["collect"], "flickr")
    assert (windows[0], len(windows)) == ("20040201T000000-20040208T000000", 1187)  # weekly, 2004-02 to 2026-11
    assert collect.parts(c["collect"], "commons-dump")[-1] == "chunk-00063-of-00064"
    assert c["collect"]["commons_dump"]["mediainfo"].endswith(".json")  # decompressed: 64 parts can be entered
    with pytest.raises(ValueError, match="no contact"):  # each team must put its own contact in
        require_user_agent(c["collect"]["user_agent"])


def test_production_host_budget_is_split_over_the_fetching_jobs_the_profile_allows():
    c = load_config(PRODUCTION)
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    limits = dict(item.split("=") for item in profile["resources"])
    assert int(limits["fetch_jobs"]) == c["fetch"]["concurrent_jobs"]
    assert c["fetch"]["host_budget"]["upload.wikimedia.org"] > 0
    with pytest.raises(ValueError, match="no contact"):  # each team must put its own contact in
        require_user_agent(c["fetch"]["user_agent"])


def test_production_pins_the_real_models():
    models = load_config(PRODUCTION)["models"]
    assert {m.get("repo_id") or m["url"].rsplit("/", 1)[-1] for m in models.values()} == {
        "Qwen/Qwen3-VL-4B-Instruct", "facebook/dinov2-large", "sscd_disc_mixup.torchscript.pt",
        "google/siglip-base-patch16-224"}
    assert all(COMMIT.fullmatch(m["revision"]) for m in models.values() if "repo_id" in m)
    assert all(SHA256.fullmatch(m["sha256"]) for m in models.values() if "url" in m)
    check_pins(models)


def test_production_model_paths_are_where_fetch_puts_them():
    c = load_config(PRODUCTION)
    given = {stage: local_path("models", name, source).as_posix()
             for name, source in c["models"].items() for stage in source["stages"]}
    assert given == {stage: c[stage]["model"] for stage in ("judge", "caption", "embed", "eval")} | {
        "agreement": c["caption"]["agreement"]["model"]}


def test_production_means_the_same_over_the_demo_config():
    """Snakemake merges --configfile key by key over the Snakefile's config.yaml: no demo value
    (file roots, thresholds, tiny models) may leak into a production run."""
    alone = load_config(PRODUCTION)
    merged = copy.deepcopy(yaml.safe_load((ROOT / "config.yaml").read_text()))
    update_config(merged, yaml.safe_load(PRODUCTION.read_text()))
    assert validate_config(merged) == alone
