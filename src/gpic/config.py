"""The one schema of config.yaml, shared by the Snakefile and the `gpic` command.

The JSON schema (schemas/config.schema.yaml) is the single source of truth: validation and
default-filling use `jsonschema` directly, so the library needs no Snakemake to read a config.
The validated config stays a plain dict (what Snakemake passes to jobs and what the stages'
config hashes are computed from, so a refactor cannot change them); the TypedDicts below
type it per section, and a test keeps their keys equal to the schema's."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal, TypedDict

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

from gpic.contracts import COLLECTORS

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class SplitsConfig(TypedDict):
    val_fraction: float
    test_fraction: float
    val_shards: int
    test_shards: int


class LicensesConfig(TypedDict):
    allow: list[str]


class FetchConfig(TypedDict):
    workers: int
    per_host: int
    timeout_s: float
    deadline_s: float
    max_bytes: int
    max_redirects: int
    retries: int
    backoff_s: float
    max_backoff_s: float
    user_agent: str
    allow_networks: list[str]
    opt_out_directives: list[str]
    file_roots: list[str]
    placeholder_sha256: list[str]
    ca_bundle: str
    host_budget: dict[str, float]
    concurrent_jobs: int


class CollectConfig(TypedDict, total=False):
    """Stage 1; each collector's own section is read by its module in gpic.collect."""

    collectors: list[str]
    user_agent: str
    timeout_s: float
    retries: int
    backoff_s: float
    max_backoff_s: float
    max_wait_s: float
    commons: dict
    commons_dump: dict
    flickr: dict
    yfcc: dict


class FilterConfig(TypedDict):
    formats: list[str]
    max_pixels: int
    animated: Literal["first_frame", "drop"]
    min_side: int
    max_aspect: float
    min_blur: float
    max_overexposed: float
    max_underexposed: float
    min_std: float
    min_entropy: float


class Criterion(TypedDict):
    prompt: str
    accept: list[str]
    reject: list[str]


class JudgeConfig(TypedDict):
    model: str
    backend: Literal["transformers", "vllm"]
    device: str
    batch_size: int
    max_pixels: int | None
    reject_threshold: float
    criteria: dict[str, Criterion]


class EmbedConfig(TypedDict):
    model: str
    device: str
    batch_size: int
    image_size: int


class DedupConfig(TypedDict):
    phash_max_distance: int
    cosine_min: float
    index: Literal["auto", "flat", "ivf", "ivfpq"]
    flat_max: int
    nlist: int
    nprobe: int
    neighbours: int
    scratch: str


class Level(TypedDict):
    prompt: str
    max_new_tokens: int


class HygieneConfig(TypedDict):
    stock_openings: list[str]
    refusals: list[str]
    language: str
    min_language_words: int
    min_language_confidence: float


class RecaptionConfig(TypedDict):
    repetition_penalty: float
    no_repeat_ngram_size: int


class AgreementConfig(TypedDict):
    model: str
    device: str
    min_score: dict[str, float]


class CaptionConfig(TypedDict):
    model: str
    backend: Literal["transformers", "vllm"]
    device: str
    batch_size: int
    max_pixels: int | None
    levels: dict[str, Level]
    hygiene: HygieneConfig
    on_flag: dict[str, Literal["keep", "recaption", "drop"]]
    recaption: RecaptionConfig
    agreement: AgreementConfig


class PackConfig(TypedDict):
    schema: Literal["ours", "gpic"]
    caption_type: Literal["tag", "short", "medium", "long"]


class EvalConfig(TypedDict):
    model: str
    device: str
    batch_size: int


class PublishConfig(TypedDict):
    name: str
    pretty_name: str
    repo_id: str


class CostConfig(TypedDict):
    target: dict[str, float]
    cluster: dict[str, int]
    prices: dict[str, float]
    gpu_images_per_s: dict[str, float]


class ModelSource(TypedDict, total=False):
    """A pinned checkpoint of config `models:`: a hub repo at a commit, or a file by URL and sha256."""

    repo_id: str
    revision: str
    url: str
    sha256: str
    stages: list[str]


class Config(TypedDict, total=False):
    """A validated config; a job is given the sections its rule passes (Snakemake reruns a
    job when one of its sections changes), so every section is optional here."""

    sources: list[str]
    shards: int
    shards_per_job: int
    allowed_sources: list[str]
    splits: SplitsConfig
    tiers: dict[str, float]
    licenses: LicensesConfig
    collect: CollectConfig
    fetch: FetchConfig
    filter: FilterConfig
    judge: JudgeConfig
    embed: EmbedConfig
    dedup: DedupConfig
    caption: CaptionConfig
    pack: PackConfig
    eval: EvalConfig
    publish: PublishConfig
    cost: CostConfig
    models: dict[str, ModelSource]


SECTIONS = dict(Config.__annotations__)  # for the schema test


class ConfigError(ValueError):
    """A config file that does not match the schema; the message names the key."""


def _with_defaults(validator_class):
    """A validator that fills each missing property with its schema default before checking
    it (jsonschema's documented recipe; Snakemake's `validate` does the same)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_VALIDATOR = None


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = _with_defaults(Draft202012Validator)(yaml.safe_load(SCHEMA.read_text()))
    return _VALIDATOR


def validate_config(config: dict) -> Config:
    """Validate in place against the schema and fill in defaults; name the bad key on error."""
    error = best_match(_validator().iter_errors(config))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"config {where}: {error.message}")
    check_inputs(config)
    return config


def check_inputs(config: dict) -> None:
    """A run must read something: source manifests, or collectors that exist (their registry is
    gpic.collect.COLLECTORS). The workflow calls this too, on the config Snakemake validated."""
    if unknown := [name for name in config["collect"]["collectors"] if name not in COLLECTORS]:
        raise ConfigError(f"config collect/collectors: unknown collector {unknown[0]!r}: choose from "
                          f"{', '.join(COLLECTORS)}")
    if not config["sources"] and not config["collect"]["collectors"]:
        raise ConfigError("config sources: nothing to read: name source manifests in `sources` or collectors in "
                          "`collect.collectors`")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    config = yaml.safe_load(path.read_text()) or {}
    return validate_config(config)


def tier_shard_counts(tiers: dict[str, float], n_shards: int) -> dict[str, int]:
    """Number of leading train shards in each tier (at least one, so tiny runs have every tier),
    smallest tier first whatever the order of the config mapping."""
    by_size = sorted(tiers.items(), key=lambda kv: kv[1])
    return {name: max(1, math.floor(frac * n_shards + 1e-9)) for name, frac in by_size}


def tier_of_shard(tiers: dict[str, float], n_shards: int, shard: int) -> str:
    """Smallest tier whose shard prefix contains this train shard."""
    return next(name for name, count in tier_shard_counts(tiers, n_shards).items() if shard < count)
