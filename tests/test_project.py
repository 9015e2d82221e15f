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


def test_import_contracts_hold():
    """.importlinter's layers: the product never imports the benchmarks or the devkit, a stage no
    later stage, inference no stage, and no part of the package imports in a cycle."""
    run = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and "BROKEN" not in run.stdout, run.stdout[-3000:] + run.stderr


def test_ruff_is_clean():
    run = subprocess.run([str(BIN / "ruff"), "check", "src", "tests", "workflow/scripts"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pip(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


ENVS = REPO / "workflow" / "envs"
# What each vLLM release requires of the packages it runs on (its wheel's Requires-Dist):
# raise vllm in workflow/envs/gpu.yaml only together with these.
VLLM_REQUIRES = {"0.34.0": {"torch": "==2.14.0", "torchvision": "==0.29.0", "transformers": ">=5.16.1,<5.23.0"}}
GPU_RULES = {"assess", "caption", "eval_reference"}


def test_the_environments_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    runner = [p for p in project if _name(p).startswith("snakemake")]
    # the jobs need gpic's dependencies, not Snakemake; the driver needs Snakemake, at the same ranges
    assert sorted(_pip(ENVS / "cpu.yaml")) == sorted(p for p in project if p not in runner)
    assert set(runner) <= set(_pip(REPO / "environment.yml"))
    gpu = {_name(p): p for p in _pip(ENVS / "gpu.yaml")}
    assert set(gpu) == {_name(p) for p in project if p not in runner} | {"vllm"}
    assert {name: gpu[name] for name in gpu if name not in ("vllm", "torch", "torchvision", "transformers")} == {
        _name(p): p for p in project if p not in runner and _name(p) not in ("torch", "torchvision", "transformers")}


def test_the_gpu_environment_pins_vllm_with_the_torch_its_release_requires():
    from packaging.specifiers import SpecifierSet

    gpu = {_name(p): p for p in _pip(ENVS / "gpu.yaml")}
    version = gpu["vllm"].removeprefix("vllm==")
    assert version in VLLM_REQUIRES, f"vllm {version}: add its requirements to VLLM_REQUIRES from its wheel"
    for name, spec in VLLM_REQUIRES[version].items():
        assert SpecifierSet(gpu[name].removeprefix(name)) == SpecifierSet(spec), name
    production = load_config(REPO / "config" / "production.yaml")
    assert production["caption"]["backend"] == "vllm"


def test_every_rule_runs_in_an_environment_of_workflow_envs():
    rules = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.MULTILINE):
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", body)
            rules[name] = (smk.parent / env.group(1)).resolve() if env else None
    assert len(rules) >= 11 and all(rules.values()), [name for name, env in rules.items() if not env]
    assert all(env.is_file() and env.parent == ENVS for env in rules.values())
    assert {name for name, env in rules.items() if env.name == "gpu.yaml"} == GPU_RULES
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["software-deployment-method"] == "conda"
    assert set(profile["set-resources"]) >= GPU_RULES and all(
        profile["set-resources"][rule]["slurm_partition"] == "h100" for rule in GPU_RULES)


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


def test_collectors_come_from_one_registry(tmp_path):
    """The config, the workflow's wildcard and `gpic collect` read the names from
    gpic.contracts.COLLECTORS: an unknown name is refused, naming it and the choices."""
    from gpic.config import validate_config
    from gpic.contracts import COLLECTORS

    base = {"shards": 1, **{stage: {"model": "m"} for stage in ("judge", "embed", "caption")}}
    with pytest.raises(ConfigError, match=r"unknown collector 'flikr': choose from commons, commons-dump, flickr"):
        validate_config({**base, "collect": {"collectors": ["flikr"]}})
    assert validate_config({**base, "collect": {"collectors": list(COLLECTORS)}})["collect"]["collectors"]
    with pytest.raises(ConfigError, match="nothing to read"):
        validate_config(base)
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert 'collector="|".join(COLLECTORS)' in common and "check_inputs(config)" in common
