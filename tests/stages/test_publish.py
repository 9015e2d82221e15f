"""The dataset card's metadata as the hub and `datasets` read it, checked offline at full scale
(8,000 train, 32 validation and 128 test shards): huggingface_hub parses it as dataset card
data, its size bucket is one of the hub's, its licence is `other` with a name and a link, and
`datasets` finds one config per tier."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
import yaml
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, metadata_load

from gpic.config import load_config
from gpic.stages.publish import SIZE_CATEGORIES, card_data, licence_fields, size_category, tier_configs

PRODUCTION = Path(__file__).resolve().parents[2] / "config" / "production.yaml"
# The hub's size buckets as `datasets` ships them for card validation ("unknown" aside).
HUB_SIZES = json.loads((Path(datasets.__file__).parent / "utils" / "resources" / "size_categories.json").read_text())


def test_size_buckets_are_the_hubs():
    assert [s for s in HUB_SIZES if s != "unknown"] == SIZE_CATEGORIES


@pytest.mark.parametrize("n, bucket", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (99_999, "10K<n<100K"),
                                       (101_200_000, "100M<n<1B"), (10**12, "n>1T")])
def test_size_category(n, bucket):
    assert size_category(n) == bucket


def test_licence_is_other_named_after_the_families_present():
    assert licence_fields(["CC-BY-4.0", "CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-2.0"]) == {
        "license": "other", "license_name": "per-image-cc-by-cc0-pd", "license_link": "README.md"}
    assert licence_fields(["CC-BY-SA-4.0", "CC-BY-4.0"])["license_name"] == "per-image-cc-by-cc-by-sa"


@pytest.fixture(scope="module")
def full_scale_card(tmp_path_factory) -> Path:
    config = load_config(PRODUCTION)
    samples = {**{f"train/gpic_train_{i:05d}.tar": 12_500 for i in range(8000)},
               **{f"val/gpic_val_{i:05d}.tar": 6_250 for i in range(32)},
               **{f"test/gpic_test_{i:05d}.tar": 7_800 for i in range(128)}}
    configs = tier_configs(config["tiers"], config["shards"], samples)
    data = card_data(config, configs, ["jpg", "png"], sum(samples.values()),
                     ["CC-BY-4.0", "CC0-1.0", "PDM-1.0", "public-domain"])
    path = tmp_path_factory.mktemp("card") / "README.md"
    path.write_text(f"---\n{data.to_yaml()}\n---\n\n# card\n")
    return path


def test_full_scale_card_is_hub_dataset_card_data(full_scale_card):
    card = DatasetCard.load(full_scale_card)  # huggingface_hub's own parser, no network
    assert type(card.data).__name__ == "DatasetCardData"
    assert card.data.size_categories == ["100M<n<1B"] and set(card.data.size_categories) <= set(HUB_SIZES)
    assert card.data.license == "other" and card.data.license_link == "README.md"
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", card.data.license_name)  # an id, like my-license-1.0
    assert card.data.task_categories == ["text-to-image", "image-to-text"]
    assert metadata_load(full_scale_card) == card.data.to_dict() == yaml.safe_load(full_scale_card.read_text()
                                                                                   .split("---")[1])
    assert "&id" not in full_scale_card.read_text()  # no YAML aliases between configs


def test_full_scale_card_has_one_datasets_config_per_tier(full_scale_card):
    data = DatasetCard.load(full_scale_card).data
    configs = MetadataConfigs.from_dataset_card_data(data)  # what load_dataset reads
    assert list(configs) == ["nano", "lite", "full"] and configs.get_default_config_name() == "full"
    files = {name: {f["split"]: len(f["path"]) for f in c["data_files"]} for name, c in configs.items()}
    assert files == {tier: {"train": n, "validation": 32, "test": 128}
                     for tier, n in (("nano", 80), ("lite", 800), ("full", 8000))}
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert set(infos) == {"nano", "lite", "full"}
    assert {"__key__", "jpg", "png", "json"} <= set(infos["full"].features)
