"""The package's shape: product code never imports the benchmarks or the devkit, no import
cycles (imports inside functions included), every stage module has the one stage surface,
and the config types and hashes match the schema and the values records carry."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from gpic.config import SCHEMA, SECTIONS, validate_config
from gpic.identity import config_hash
from gpic.stages import PIPELINE, STAGES
from gpic.stages.fetch import fetch_params
from gpic.stages.filter import scores_hash

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gpic"
NOT_PRODUCT = ("gpic.bench", "gpic.devkit", "gpic.cli")  # tools beside the product


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """gpic modules a file imports anywhere in it (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            for alias in node.names:  # `from gpic.stages import fetch` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists()
                          else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "gpic" or name.startswith("gpic.")}


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_graph_sees_the_package():
    assert {"gpic.stages.fetch", "gpic.layout", "gpic.bench.dag", "gpic.devkit.demo", "gpic.cli.tracing"} <= set(GRAPH)
    assert "gpic.stages.fetch" in GRAPH["gpic.jobs"] and "gpic.layout" in GRAPH["gpic.stages.fetch"]


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_offenders(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(product module, bench or devkit module it imports)."""
    return [(module, target) for module, targets in graph.items() for target in sorted(targets)
            if not any(in_package(module, p) for p in NOT_PRODUCT)
            and any(in_package(target, p) for p in ("gpic.bench", "gpic.devkit"))]


def test_product_never_imports_bench_or_devkit():
    assert layer_offenders(GRAPH) == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each once, as found by depth-first search."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_layer_check_finds_a_product_module_importing_the_devkit():
    graph = {**GRAPH, "gpic.stages.fetch": GRAPH["gpic.stages.fetch"] | {"gpic.devkit.tiny_models"}}
    assert layer_offenders(graph) == [("gpic.stages.fetch", "gpic.devkit.tiny_models")]


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
# sections came).
HASHES = {
    "demo": {"filter": "ec77cf24eb5c", "judge": "e89205afd13b", "embed": "dbb8962ce6a3", "dedup": "2ce0b14c9710",
             "caption": "b2db72eec6b3", "eval": "63418077bc63", "splits": "fb8f1b2f903a", "tiers": "c3608768afbb",
             "publish": "3605399b2f97", "cost": "8c663b246f69", "fetch_params": "76dacc19002c",
             "scores": "31ee07f365d6", "whole": "4355adf7bb68"},
    "minimal": {"filter": "ec77cf24eb5c", "judge": "d8aa11e111a9", "embed": "2ea11b828290", "dedup": "78f44dafecc3",
                "caption": "175cd12461c8", "eval": "a3643eeea4cf", "splits": "2d1d354934f8", "tiers": "c3608768afbb",
                "publish": "4ea95a6daa41", "cost": "8c663b246f69", "fetch_params": "189cf34e10a0",
                "scores": "31ee07f365d6", "whole": "cb57b9fcc34e"},
}


@pytest.mark.parametrize("name", sorted(HASHES))
def test_config_values_and_hashes_do_not_change(name):
    raw = (yaml.safe_load((PACKAGE.parents[1] / "config.yaml").read_text()) if name == "demo" else
           {"sources": ["s.csv"], "shards": 8000, "judge": {"model": "m"}, "embed": {"model": "m"},
            "caption": {"model": "m"}, "eval": {"model": "m"}})
    c = validate_config(raw)
    got = {s: config_hash(c[s]) for s in ("filter", "judge", "embed", "dedup", "caption", "eval", "splits", "tiers",
                                          "publish", "cost")}
    got.update(fetch_params=config_hash(fetch_params(c)), scores=scores_hash(c["filter"]), whole=config_hash(c))
    assert got == HASHES[name]
