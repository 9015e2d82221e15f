"""The package's shape that import-linter cannot state (its contracts, in .importlinter, keep
the product apart from the benchmarks and the devkit, the stages in pipeline order and the
package free of cycles): every stage module has the one stage surface, and the config types
and hashes match the schema and the values records carry."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpic.config import SCHEMA, SECTIONS, validate_config
from gpic.identity import config_hash
from gpic.stages import PIPELINE, STAGES
from gpic.stages.fetch import fetch_params
from gpic.stages.filter import scores_hash

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", [s.name for s in PIPELINE])
def test_every_stage_module_has_the_stage_surface(stage):
    module = importlib.import_module(f"gpic.stages.{stage}")
    assert module.STAGE is STAGES[stage]
    assert list(inspect.signature(module.run).parameters) == ["files", "cfg", "model"]
    assert inspect.signature(module.run).parameters["model"].kind is inspect.Parameter.KEYWORD_ONLY
    if stage != "publish":
        assert "key" in module.COLUMNS


def test_outcomes_name_columns_their_tables_hold():
    for stage in PIPELINE:
        if stage.outcome and stage.outcome.status:
            module = importlib.import_module(f"gpic.stages.{stage.name}")
            held = set(module.COLUMNS) | ({"kept", "duplicate_of", "dedup_layer", "similarity"}
                                          if stage.name == "dedup" else set())
            assert set(stage.outcome.columns) <= held | {"split", "source", "source_id", "url"}, stage.name


def test_config_types_have_the_schema_keys():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(SECTIONS) == set(schema["properties"])
    for name, hint in SECTIONS.items():
        properties = schema["properties"][name].get("properties")
        if properties and hasattr(hint, "__annotations__"):
            assert set(hint.__annotations__) == set(properties), name


# Hashes of the demo config and of a minimal one (with Snakemake's validator). Records carry
# them: a change refetches or recaptions every shard, so one must be made on purpose (the fetch
# hashes changed when fetch.allow_networks and fetch.opt_out_directives replaced
# allow_private_addresses, again when fetch.placeholder_sha256 came (a listed hash fails
# stored bodies as gone) and when ca_bundle, host_budget and concurrent_jobs came; the embed
# hashes when embed.center_crop was removed and when image_size became SSCD's square 320; the
# judge's when scores replaced parsed answers (reject_threshold, backend); dedup's when the
# compressed index came (neighbours, scratch); the whole config's when the pack and collect
# sections came; the caption's when caption hygiene, on_flag, recaption and agreement came).
HASHES = {
    "demo": {"filter": "ec77cf24eb5c", "judge": "e89205afd13b", "embed": "dbb8962ce6a3", "dedup": "2ce0b14c9710",
             "caption": "0efc0cf2f073", "eval": "63418077bc63", "splits": "fb8f1b2f903a", "tiers": "c3608768afbb",
             "publish": "3605399b2f97", "cost": "8c663b246f69", "fetch_params": "76dacc19002c",
             "scores": "31ee07f365d6", "whole": "d5f6bb8919ce"},
    "minimal": {"filter": "ec77cf24eb5c", "judge": "d8aa11e111a9", "embed": "2ea11b828290", "dedup": "78f44dafecc3",
                "caption": "1c44c05c95b7", "eval": "a3643eeea4cf", "splits": "2d1d354934f8", "tiers": "c3608768afbb",
                "publish": "4ea95a6daa41", "cost": "8c663b246f69", "fetch_params": "189cf34e10a0",
                "scores": "31ee07f365d6", "whole": "0306710c5aec"},
}


@pytest.mark.parametrize("name", sorted(HASHES))
def test_config_values_and_hashes_do_not_change(name):
    raw = (yaml.safe_load((REPO / "config.yaml").read_text()) if name == "demo" else
           {"sources": ["s.csv"], "shards": 8000, "judge": {"model": "m"}, "embed": {"model": "m"},
            "caption": {"model": "m"}, "eval": {"model": "m"}})
    c = validate_config(raw)
    got = {s: config_hash(c[s]) for s in ("filter", "judge", "embed", "dedup", "caption", "eval", "splits", "tiers",
                                          "publish", "cost")}
    got.update(fetch_params=config_hash(fetch_params(c)), scores=scores_hash(c["filter"]), whole=config_hash(c))
    assert got == HASHES[name]


def test_the_report_and_the_card_start_without_torch():
    """The report and publish jobs (CPU, corpus-wide) read the caption audit from the caption
    stage's module; its models, and torch with them, load only where a caption job asks."""
    code = ("import sys, gpic.review.report, gpic.stages.publish, gpic.stages.caption; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
