"""Project-level checks: config validation, Snakemake lint and format, packaging in sync."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from gpic.config import ConfigError, load_config, tier_of_shard, tier_shard_counts

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_demo_config_is_valid_and_defaults_are_filled():
    config = load_config(REPO / "config.yaml")
    assert config["shards"] == 8 and config["fetch"]["timeout_s"] == 20
    assert set(config["caption"]["levels"]) == {"label", "short", "medium", "long"}


@pytest.mark.parametrize("patch,named", [
    ({"filter": {"min_sid": 3}}, "min_sid"),
    ({"shards": 0}, "shards"),
    ({"judge": {"model": "m", "backend": "maybe"}}, "maybe"),
    ({"judge": {"model": "m", "on_unparseable": "keep"}}, "on_unparseable"),  # gone: the judge reads probabilities
])
def test_bad_config_is_refused_naming_the_key(tmp_path, patch, named):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(patch)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=named):
        load_config(path)
    run = subprocess.run([str(BIN / "snakemake"), "-n", "--configfile", str(path)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode != 0 and named in run.stdout + run.stderr


def test_tiers_are_nested_prefixes():
    assert tier_shard_counts({"nano": 0.01, "lite": 0.1, "full": 1.0}, 8000) == {"nano": 80, "lite": 800, "full": 8000}
    assert tier_shard_counts({"nano": 0.01, "lite": 0.1, "full": 1.0}, 8) == {"nano": 1, "lite": 1, "full": 8}
    tiers = {"nano": 0.01, "lite": 0.1, "full": 1.0}
    assert [tier_of_shard(tiers, 8000, s) for s in (0, 79, 80, 799, 800, 7999)] == [
        "nano", "nano", "lite", "lite", "full", "full"]


def test_snakemake_lint_has_no_findings():
    run = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Lints for" not in run.stdout + run.stderr, run.stdout + run.stderr


def test_snakefmt_is_clean():
    files = ["Snakefile", *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    run = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_is_clean():
    run = subprocess.run([str(BIN / "ruff"), "check", "src", "tests", "workflow/scripts"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [p for p in pip if not p.startswith("-e")]
    assert sorted(map(str.lower, listed)) == sorted(map(str.lower, project))
    assert {_name(p) for p in listed} == {_name(p) for p in project}


def test_tier_order_does_not_depend_on_the_config_mapping():
    shuffled = {"full": 1.0, "lite": 0.1, "nano": 0.01}
    assert list(tier_shard_counts(shuffled, 8)) == ["nano", "lite", "full"]
    assert tier_of_shard(shuffled, 8, 0) == "nano"


@pytest.mark.parametrize("profile", ["slurm", "slurm-local"])
def test_profiles_name_only_rules_the_workflow_has(profile):
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")),
                           re.MULTILINE))
    assert set(settings.get("set-resources", {})) <= rules
    if profile == "slurm":
        assert settings["executor"] == "slurm" and settings["default-resources"]["slurm_partition"]
