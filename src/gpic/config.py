"""The one schema of config.yaml, shared by the Snakefile and the `gpic` command."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config file that does not match the schema; the message names the key."""


def validate_config(config: dict) -> dict:
    """Validate in place against the schema and fill in defaults; name the bad key on error."""
    from snakemake.utils import validate  # snakemake's validator also applies defaults

    try:
        validate(config, str(SCHEMA))
    except Exception as exc:  # snakemake wraps jsonschema's error in its own type
        raise ConfigError(str(exc)) from None
    return config


def load_config(path: str | Path) -> dict:
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
