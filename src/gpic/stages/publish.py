"""The publish stage: a dataset card the Hugging Face `datasets` library can load (YAML
`configs:` per tier) and a checksum manifest of every packed file."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from gpic import __version__
from gpic.config import Config, tier_shard_counts
from gpic.contracts import HELD_OUT, SampleRecord
from gpic.contracts import HF_SPLIT_NAMES as SPLIT_NAMES
from gpic.identity import file_sha256
from gpic.layout import Layout
from gpic.stages import STAGES
from gpic.stages.pack import read_indexes
from gpic.store import atomic_path

STAGE = STAGES["publish"]

PUBLISHED = ["README.md", "SHA256SUMS", "*/*.tar", "*/*.parquet"]  # what goes to the hub
HF_DTYPES = {str: "string", int: "int64"}


def tier_configs(tiers: dict[str, float], n_train: int, samples: dict[str, int]) -> list[dict]:
    """One `datasets` config per tier: a prefix of the train shards, all val and test shards.
    Only shards holding samples are listed (`samples`: packed path -> samples), and a split or
    tier with none is left out: `datasets` refuses a split that corresponds to no data."""
    held_out = {split: sorted(p for p, n in samples.items() if n and p.startswith(f"{split}/")) for split in HELD_OUT}
    configs = []
    for name, count in tier_shard_counts(tiers, n_train).items():
        train = [p for i in range(count) if samples.get(p := f"train/gpic_train_{i:05d}.tar")]
        files = [{"split": SPLIT_NAMES[split], "path": paths}
                 for split, paths in (("train", train), *held_out.items()) if paths]
        if files:
            configs.append({"config_name": name, "data_files": files,
                            **({"default": True} if count == n_train else {})})
    return configs


def record_features(model: type[BaseModel]) -> list[dict]:
    """The hub's YAML feature list of a pydantic record (nested models become structs)."""
    features = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            features.append({"name": name, "struct": record_features(kind)})
        else:
            features.append({"name": name, "dtype": HF_DTYPES[kind]})
    return features


def dataset_info(configs: list[dict], image_fields: list[str]) -> list[dict]:
    """Features declared per config: `datasets` then skips its inference from the first
    samples, which rejects shards mixing {key}.jpg and {key}.png members."""
    features = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
                *({"name": ext, "dtype": "image"} for ext in image_fields),
                {"name": "json", "struct": record_features(SampleRecord)}]
    return [{"config_name": c["config_name"], "features": features} for c in configs]


def write_card(packed: str | Path, config: Config, card_path: str | Path, sums_path: str | Path) -> None:
    packed = Path(packed)
    tars = sorted(packed.glob("*/*.tar"))
    index = read_indexes(packed)
    per_tar = index.groupby(["split", "tar"]).size()
    samples = {f"{split}/{tar}": int(n) for (split, tar), n in per_tar.items()}
    n_train = config["shards"]
    counts = tier_shard_counts(config["tiers"], n_train)
    configs = tier_configs(config["tiers"], n_train, samples)
    image_fields = sorted({m.rsplit(".", 1)[-1] for m in index.get("image_member", [])}) or ["jpg"]
    header = {
        "pretty_name": config["publish"]["pretty_name"],
        "license": "other",
        "task_categories": ["text-to-image", "image-to-text"],
        "size_categories": ["n<1K" if len(index) < 1000 else "1K<n<10K" if len(index) < 10_000 else "n>1M"],
        "configs": configs,
        "dataset_info": dataset_info(configs, image_fields),
    }
    split_counts = index["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    licences = index.groupby(["license_id"]).size().sort_values(ascending=False)
    sources = index["source"].value_counts()

    def train_samples(count):
        return int(index[(index['split'] == 'train')
                         & index['tar'].isin([f'gpic_train_{i:05d}.tar' for i in range(count)])].shape[0])

    tier_rows = "\n".join(
        f"| {name} | {count} | {train_samples(count)} |"
        for name, count in counts.items())
    body = f"""# {config['publish']['pretty_name']}

Image-text pairs built from permissively licensed images by the GPIC pipeline (gpic {__version__}):
licence gate, fetch, quality filter, VLM judge, global deduplication (exact, perceptual and
copy-detection), four caption levels per image (label, short, medium, long), packed into static
webdataset shards. Each sample is `{{key}}.jpg|png|webp` (the original bytes) and `{{key}}.json`
(source, licence, attribution, captions); each tar has a parquet index of member offsets.

## Splits

| split | samples | shards |
| --- | --- | --- |
""" + "\n".join(f"| {SPLIT_NAMES[s]} | {int(split_counts[s])} | {len(list(packed.glob(f'{s}/*.tar')))} |"
                for s in split_counts.index) + f"""

## Tiers (nested prefixes of the train shards)

| tier | train shards | train samples |
| --- | --- | --- |
{tier_rows}

## Licences

| licence | samples |
| --- | --- |
""" + "\n".join(f"| {lic} | {int(n)} |" for lic, n in licences.items()) + """

## Sources

| source | samples |
| --- | --- |
""" + "\n".join(f"| {src} | {int(n)} |" for src, n in sources.items()) + """

Every image keeps its own licence, licence URL and attribution in its JSON record; reuse must
follow the licence of each image. Checksums of every file are in `SHA256SUMS`.
"""
    with atomic_path(card_path) as tmp:
        tmp.write_text("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body)
    files = sorted([*tars, *(t.with_suffix(".parquet") for t in tars)])
    with atomic_path(sums_path) as tmp:
        tmp.write_text("".join(f"{file_sha256(f)}  {f.relative_to(packed)}\n" for f in files))


def published_files(packed: str | Path) -> list[Path]:
    """The files an upload sends, in a stable order."""
    packed = Path(packed)
    return sorted({p for pattern in PUBLISHED for p in packed.glob(pattern) if p.is_file()})


def upload(packed: str | Path, repo_id: str, private: bool = True) -> None:
    """Resumable upload of the packed folder as a hub dataset (re-running continues where it
    stopped: huggingface_hub keeps per-file state in the folder's .cache)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_large_folder(repo_id=repo_id, folder_path=str(packed), repo_type="dataset",
                            allow_patterns=PUBLISHED)


def run(files: Layout, cfg: Config, *, model=None) -> None:
    """The dataset card and the checksums of every packed file."""
    write_card(files.packed_root, cfg, files.card, files.checksums)
