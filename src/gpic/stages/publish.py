"""The publish stage: a dataset card whose metadata is the hub's (huggingface_hub's dataset card
data: licence, size bucket, tasks) and that the `datasets` library can load (YAML `configs:`
per tier), and a checksum manifest of every packed file."""

from __future__ import annotations

import copy
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import UnionType
from typing import Literal, get_args, get_origin

import pandas as pd
from huggingface_hub import DatasetCardData
from pydantic import BaseModel

from gpic import __version__
from gpic.config import Config, tier_shard_counts
from gpic.contracts import HELD_OUT, GpicSampleRecord, SampleRecord
from gpic.contracts import HF_SPLIT_NAMES as SPLIT_NAMES
from gpic.identity import file_sha256
from gpic.layout import Layout
from gpic.stages import STAGES
from gpic.store import atomic_path, read_table

STAGE = STAGES["publish"]

PUBLISHED = ["README.md", "SHA256SUMS", "*/*.tar", "*/*.parquet"]  # what goes to the hub
HF_DTYPES = {str: "string", int: "int64", float: "float64"}
# The hub's size buckets (huggingface_hub's DatasetCardData; `datasets` ships the same list).
SIZE_CATEGORIES = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"]
LICENCE_FAMILIES = [("CC0-", "cc0"), ("PDM-", "pd"), ("public-domain", "pd"), ("CC-BY-SA-", "cc-by-sa"),
                    ("CC-BY-", "cc-by")]  # first prefix that matches names the family


def size_category(n: int) -> str:
    """The hub's bucket for n samples: 101.2M packed samples at full scale is 100M<n<1B."""
    return next((name for i, name in enumerate(SIZE_CATEGORIES[:-1]) if n < 1000 * 10**i), SIZE_CATEGORIES[-1])


def licence_fields(licence_ids: list[str]) -> dict[str, str]:
    """The card's licence: `other`, named after the licence families present, linked to the
    card's licence table. A list of hub licence ids (cc-by-4.0, cc0-1.0, ...) would read as a
    choice of licences for the whole dataset, which a mixed corpus cannot offer (each image
    keeps its own), and the hub has no id for the Public Domain Mark, other public-domain
    statements or CC BY 1.0; `other` with license_name and license_link is the hub's way."""
    families = sorted({next((f for prefix, f in LICENCE_FAMILIES if lic.startswith(prefix)), lic.lower())
                       for lic in licence_ids})
    return {"license": "other", "license_name": "-".join(["per-image", *families]), "license_link": "README.md"}


def card_data(config: Config, configs: list[dict], image_fields: list[str], n_samples: int,
              licence_ids: list[str]) -> DatasetCardData:
    """The card's YAML header as huggingface_hub's dataset card data: what the hub indexes
    (licence, tasks, size bucket), what `datasets` loads (configs per tier, features) and
    which record schema the json members use (`pack.schema`)."""
    schema = config.get("pack", {}).get("schema", "ours")
    return DatasetCardData(
        pretty_name=config["publish"]["pretty_name"],
        **licence_fields(licence_ids),
        task_categories=["text-to-image", "image-to-text"],
        size_categories=[size_category(n_samples)],
        configs=configs,
        dataset_info=dataset_info(configs, image_fields, GpicSampleRecord if schema == "gpic" else SampleRecord),
        record_schema=schema,
    )


def tier_configs(tiers: dict[str, float], n_train: int, samples: dict[str, int]) -> list[dict]:
    """One `datasets` config per tier: a prefix of the train shards, all val and test shards.
    Only shards holding samples are listed (`samples`: packed path -> samples), and a split or
    tier with none is left out: `datasets` refuses a split that corresponds to no data."""
    held_out = {split: sorted(p for p, n in samples.items() if n and p.startswith(f"{split}/")) for split in HELD_OUT}
    configs = []
    for name, count in tier_shard_counts(tiers, n_train).items():
        train = [p for i in range(count) if samples.get(p := f"train/gpic_train_{i:05d}.tar")]
        files = [{"split": SPLIT_NAMES[split], "path": list(paths)}  # a copy each: no YAML aliases
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
        elif get_origin(kind) is list:  # GPIC's `split`: the tiers holding the sample
            features.append({"name": name, "sequence": "string"})
        elif get_origin(kind) is Literal:
            features.append({"name": name, "dtype": "string"})
        elif get_origin(kind) is UnionType:  # `float | None`: an agreement score, null where not scored
            (inner,) = [arg for arg in get_args(kind) if arg is not type(None)]
            features.append({"name": name, "dtype": HF_DTYPES[inner]})
        else:
            features.append({"name": name, "dtype": HF_DTYPES[kind]})
    return features


def dataset_info(configs: list[dict], image_fields: list[str],
                 record: type[BaseModel] = SampleRecord) -> list[dict]:
    """Features declared per config: `datasets` then skips its inference from the first
    samples, which rejects shards mixing {key}.jpg and {key}.png members."""
    features = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
                *({"name": ext, "dtype": "image"} for ext in image_fields),
                {"name": "json", "struct": record_features(record)}]
    return [{"config_name": c["config_name"], "features": copy.deepcopy(features)}  # no YAML aliases
            for c in configs]


CARD_COLUMNS = ["split", "tar", "license_id", "source", "image_member"]  # all the card counts


def index_counts(packed: Path) -> dict[str, Counter]:
    """What the card counts (samples per tar, licence, source, split, image type), one index
    file and five columns at a time: memory stays one shard's, not the corpus's (110M rows)."""
    counts = {name: Counter() for name in ("tar", "license_id", "source", "split", "ext")}
    for path in sorted(packed.glob("*/*.parquet")):
        index = read_table(path, columns=CARD_COLUMNS)
        counts["tar"].update(f"{split}/{tar}" for split, tar in zip(index["split"], index["tar"], strict=True))
        for name in ("license_id", "source", "split"):
            counts[name].update(index[name])
        counts["ext"].update(member.rsplit(".", 1)[-1] for member in index["image_member"])
    return counts


def most_first(counter: Counter) -> pd.Series:
    """Counts, largest first, ties by name: the card reads the same however the shards were read."""
    return pd.Series(dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))), dtype=int)


def cell(value: object) -> str:
    """A value inside a Markdown table cell: one line, pipes escaped, long text cut."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= 80 else text[:79] + "…"


def repeated_line(audit: dict) -> str:
    """The captions written for at least 1% of a level's images (three per level), as one sentence."""
    found = [f"{level} \"{cell(text)[:60]}\" for {n} of {audit['sampled']}"
             for level, figures in audit["levels"].items() for text, n in figures["repeated"][:3]]
    return ("Captions repeated across images (1% of a level or more): " + "; ".join(found) + "." if found
            else "No caption is repeated across 1% of a level's images or more.")


def captions_card(audit: dict) -> str:
    """The card's caption section: what the corpus' captions are like, from the caption audit
    (gpic.stages.caption.audit), and the person-describing terms as counts, not judgements."""
    levels, models = audit["levels"], audit["models"]
    status = audit["status"]
    scorer = (f"scored against their image by {models['agreement_model_id']} (revision "
              f"{models['agreement_model_revision'][:12]}), a model of another family" if models[
                  "agreement_model_id"] else "not scored (no `caption.agreement.model` was configured)")
    dropped = "; ".join(f"{reason}: {n}" for reason, n in audit["dropped"].items()) or "none"
    sample = (f" Text statistics read every {audit['step']}th image ({audit['sampled']} per level)."
              if audit["step"] > 1 else "")

    def row(name, value):
        return f"| {name} | " + " | ".join(cell(value(levels[lv])) for lv in levels) + " |"

    def first(pairs):
        return f"{pairs[0][0]} ({pairs[0][1]})" if pairs else "-"

    def span(figures, *names):
        return " / ".join(f"{figures[name]:.3g}" for name in names) if figures else "-"

    rules = sorted({rule for lv in levels.values() for rule in lv["flags"]})
    lines = [
        "## Captions", "",
        f"Four levels per image by {models['model_id'] or '-'} (revision {models['model_revision'][:12]}), "
        f"cleaned by caption hygiene and {scorer}: the agreement score is the cosine similarity of image and caption "
        f"embeddings. {audit['captioned']} images captioned: {status.get('ok', 0)} kept, {status.get('dropped', 0)} "
        f"dropped by hygiene ({dropped}), {status.get('failed', 0)} not decoded.{sample} The index beside each tar "
        "holds every caption's flags (`{level}_flags`) and score (`{level}_agreement`), so a tier can be filtered "
        "by them.", "",
        "| | " + " | ".join(levels) + " |", "| --- |" + " --- |" * len(levels),
        row("words (mean / p95)", lambda lv: span(lv["words"], "mean", "p95")),
        row("vocabulary (distinct words)", lambda lv: lv["vocabulary"]),
        row("agreement (p5 / median / p95)", lambda lv: span(lv["agreement"], "p5", "p50", "p95")),
        *(row(f"flagged {rule}", lambda lv, rule=rule: lv["flags"].get(rule, 0)) for rule in rules),
        row("most frequent caption", lambda lv: first(lv["top_captions"])),
        row("most frequent trigram", lambda lv: first(lv["top_trigrams"])),
        row("commonest opening, raw", lambda lv: first(lv["openings_before"])),
        row("commonest opening, after hygiene", lambda lv: first(lv["openings_after"])), "",
        repeated_line(audit), "",
        *(["Lowest agreement (long captions): " + "; ".join(
            f"`{e['key']}` {e['score']:.3f} \"{cell(e['caption'])}\"" for e in levels["long"]["low"]) + ".", ""]
          if levels["long"]["low"] else []),
        "### Biases", "",
        "Captions that mention each group of person-describing terms, per level (counted, not judged; "
        "the terms are gpic.hygiene.PERSON_TERMS):", "",
        "| terms | " + " | ".join(levels) + " |", "| --- |" + " --- |" * len(levels),
        *(f"| {name} ({', '.join(terms[:6])}, ...) | " + " | ".join(str(levels[lv]["person"][name]) for lv in levels)
          + " |" for name, terms in audit["person_groups"].items()), ""]
    return "\n".join(lines)


def write_card(packed: str | Path, config: Config, card_path: str | Path, sums_path: str | Path,
               workers: int | None = None, captions: dict | None = None) -> None:
    """The card (and the checksums); `captions`, the caption audit, gives it its caption section."""
    packed = Path(packed)
    tars = sorted(packed.glob("*/*.tar"))
    counted = index_counts(packed)
    samples = dict(counted["tar"])
    n_train = config["shards"]
    counts = tier_shard_counts(config["tiers"], n_train)
    configs = tier_configs(config["tiers"], n_train, samples)
    image_fields = sorted(counted["ext"]) or ["jpg"]
    licences = most_first(counted["license_id"])
    header = card_data(config, configs, image_fields, sum(counted["split"].values()), list(licences.index))
    split_counts = pd.Series(counted["split"], dtype=int).reindex(["train", "val", "test"], fill_value=0)
    sources = most_first(counted["source"])

    def train_samples(count):
        return sum(samples.get(f"train/gpic_train_{i:05d}.tar", 0) for i in range(count))

    tier_rows = "\n".join(
        f"| {name} | {count} | {train_samples(count)} |"
        for name, count in counts.items())
    pack_cfg = config.get("pack", {})
    schema_line = ("Records use GPIC's published schema (`img_width`/`img_height`, `split` = the tiers holding "
                   f"the sample, `caption` with `caption_type` {pack_cfg.get('caption_type', 'long')!r}; all four "
                   "levels also as `tag`/`short`/`medium`/`long`)." if pack_cfg.get("schema") == "gpic" else
                   "Records use this pipeline's schema (`width`/`height`, `split`, `tier`, "
                   "`captions.label|short|medium|long`).")
    body = f"""# {config['publish']['pretty_name']}

Image-text pairs built from permissively licensed images by the GPIC pipeline (gpic {__version__}):
licence gate, fetch, quality filter, VLM judge, global deduplication (exact, perceptual and
copy-detection), four caption levels per image (label, short, medium, long), packed into static
webdataset shards. Each sample is `{{key}}.jpg|png|webp` (the original bytes) and `{{key}}.json`
(source, licence, attribution, captions); each tar has a parquet index of member offsets.
{schema_line}

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
""" + (f"\n{captions_card(captions)}" if captions else "")
    with atomic_path(card_path) as tmp:
        tmp.write_text(f"---\n{header.to_yaml()}\n---\n\n{body}")
    files = sorted([*tars, *(t.with_suffix(".parquet") for t in tars)])
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:  # hashlib releases the GIL
        digests = list(pool.map(file_sha256, files))
    with atomic_path(sums_path) as tmp:
        tmp.write_text("".join(f"{digest}  {f.relative_to(packed)}\n"
                               for f, digest in zip(files, digests, strict=True)))


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
    from gpic.stages.caption import audit

    write_card(files.packed_root, cfg, files.card, files.checksums, captions=audit(files.tables("captions")))
