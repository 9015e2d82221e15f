"""One shard of real photos through every stage function in order, with the tiny local
models: each stage's output is checked on the real files the previous stage wrote."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import imagehash
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from gpic.config import validate_config
from gpic.contracts import LEVELS, SampleRecord
from gpic.hygiene import RULES
from gpic.inference.agreement import AgreementScorer
from gpic.inference.vlm import VisionLanguageModel
from gpic.stages.caption import Captioner, caption_shard, load_model
from gpic.stages.dedup import dedup_corpus
from gpic.stages.embed import assess_shard, embed_shard, read_descriptors
from gpic.stages.fetch import fetch_shard
from gpic.stages.filter import filter_shard
from gpic.stages.judge import judge_shard
from gpic.stages.pack import ShardInputs, pack
from gpic.stages.partition import partition
from gpic.stages.provenance import assemble, summarise
from gpic.stages.publish import write_card
from gpic.store import read_table

from helpers import blank, jpeg_bytes

ATTRIBUTION = "Scikit-image contributors"


@pytest.fixture(scope="module")
def vlm(tiny_models):
    return VisionLanguageModel(tiny_models["vlm"])


@pytest.fixture(scope="module")
def captioner(vlm, tiny_models):
    return Captioner(vlm, AgreementScorer(tiny_models["agreement"]))


@pytest.fixture(scope="module")
def run(tmp_path_factory, photos, tiny_models, vlm):
    """Every stage of shard 00000 written under one results folder, like the workflow does."""
    root = tmp_path_factory.mktemp("stages")
    files = {
        "astronaut": jpeg_bytes(photos["astronaut"]),
        "coffee": jpeg_bytes(photos["coffee"]),
        "coffee_copy": jpeg_bytes(photos["coffee"], quality=60),  # a re-encoded copy for dedup
        "chelsea": jpeg_bytes(photos["chelsea"]),
        "rocket": jpeg_bytes(photos["rocket"]),
        "grey": jpeg_bytes(blank()),
        "truncated": jpeg_bytes(photos["astronaut"])[:5000],
    }
    rows = []
    for name, data in files.items():
        (root / f"{name}.jpg").write_bytes(data)
        rows.append(dict(source="wikimedia", source_id=name, url=(root / f"{name}.jpg").as_uri(),
                         license="CC BY 4.0", license_url="", attribution=ATTRIBUTION, title=name))
    rows.append(dict(source="flickr", source_id="nc", url=(root / "rocket.jpg").as_uri(),
                     license="Attribution-NonCommercial License", license_url="", attribution="x", title="nc"))
    pd.DataFrame(rows).to_csv(root / "wikimedia.csv", index=False)
    cfg = validate_config({
        "sources": [str(root / "wikimedia.csv")], "shards": 1,
        "splits": {"val_fraction": 0.2, "test_fraction": 0.2, "val_shards": 1, "test_shards": 1},
        "fetch": {"file_roots": [str(root)]},
        "judge": {"model": str(tiny_models["vlm"]), "batch_size": 4, "reject_threshold": 1.0},  # random weights
        "embed": {"model": str(tiny_models["copy_detector"])},
        "dedup": {"phash_max_distance": 4, "cosine_min": 0.85},
        "caption": {"model": str(tiny_models["vlm"]), "batch_size": 4, "levels": {
            level: {"prompt": f"Describe this image ({level}).", "max_new_tokens": n}
            for level, n in zip(LEVELS, (3, 5, 8, 12))}},
    })
    r = {name: root / name for name in ("manifests", "raw", "fetch", "filter", "judge", "embed", "dedup",
                                         "captions", "packed", "provenance")}
    p = {name: str(path / "00000.parquet") for name, path in r.items()}
    p["raw"] = str(r["raw"] / "00000.tar")
    partition(cfg["sources"], cfg, r["manifests"])
    manifest = read_table(p["manifests"])
    records = fetch_shard(manifest, cfg, p["raw"], p["fetch"])
    filtered = filter_shard(records, p["raw"], cfg["filter"], p["filter"])
    judged = judge_shard(filtered, records, p["raw"], cfg["judge"], p["judge"], model=vlm)
    survivors = judged.loc[judged["judge_verdict"] == "pass", "key"].tolist()
    embedded = embed_shard(survivors, manifest, records, filtered, p["raw"], cfg["embed"], p["embed"])
    dedup_corpus({"00000": p["embed"]}, cfg["dedup"], r["dedup"] / "decisions.parquet", {"00000": p["dedup"]})
    decisions = read_table(p["dedup"])
    captions = caption_shard(decisions, records, p["raw"], cfg["caption"], p["captions"],
                             model=Captioner(vlm, AgreementScorer(tiny_models["agreement"])))
    inputs = ShardInputs(p["manifests"], p["fetch"], p["filter"], p["captions"], p["raw"])
    packed = {split: r["packed"] / split / f"gpic_{split}_00000" for split in ("train", "val", "test")}
    indexes = {split: pack([inputs], split, "nano", f"{stem}.tar", f"{stem}.parquet") for split, stem in packed.items()}
    provenance = assemble({s: p[s] for s in ("manifests", "fetch", "filter", "judge", "embed", "dedup", "captions")},
                          [f"{stem}.parquet" for stem in packed.values()], p["provenance"])
    write_card(r["packed"], cfg, r["packed"] / "README.md", r["packed"] / "SHA256SUMS")
    key_of = dict(zip(manifest["source_id"], manifest["key"]))
    return dict(root=root, cfg=cfg, files=files, key_of=key_of, manifest=manifest, records=records,
                filtered=filtered, judged=judged, embedded=embedded, decisions=decisions, captions=captions,
                packed=packed, indexes=indexes, provenance=provenance)


def test_fetch_and_filter_record_every_key(run):
    states = dict(zip(run["records"]["key"], run["records"]["fetch_status"]))
    key = run["key_of"]
    assert states[key["nc"]] == "dropped" and states[key["astronaut"]] == "ok"
    verdicts = run["filtered"].set_index("key")["filter_reason"]
    assert verdicts[key["grey"]].startswith("near-blank")
    assert verdicts[key["truncated"]].startswith("decode corrupt")
    assert all(verdicts[key[n]] == "" for n in ("astronaut", "coffee", "chelsea", "rocket"))


def test_judge_records_scores_beside_each_verdict(run, vlm, tmp_path):
    judged = run["judged"]
    passed = set(run["filtered"].loc[run["filtered"]["filter_verdict"] == "pass", "key"])
    assert set(judged["key"]) == passed
    for criterion in ("quality", "safety"):  # the tiny model's real (noisy) next-token probabilities
        assert judged[f"{criterion}_p_reject"].between(0, 1, inclusive="neither").all()
        assert judged[f"{criterion}_mass"].between(0, 1, inclusive="neither").all()
    assert (judged["judge_model_revision"] == vlm.revision).all()
    strict = {**run["cfg"]["judge"], "reject_threshold": 0.0}
    again = judge_shard(run["filtered"], run["records"], run["root"] / "raw" / "00000.tar", strict,
                        tmp_path / "judge.parquet", model=vlm)
    assert again[["key", "quality_p_reject", "safety_mass"]].equals(judged[["key", "quality_p_reject", "safety_mass"]])
    assert (again["judge_verdict"] == "drop").all()  # any p_reject above 0 rejects at threshold 0
    assert again["judge_reason"].str.startswith("judge quality rejected: p_reject").all()


def test_embed_hashes_and_descriptors(run):
    embedded = run["embedded"].set_index("key")
    key = run["key_of"]
    coffee = Image.open(io.BytesIO(run["files"]["coffee"]))
    filtered = run["filtered"].set_index("key")
    assert embedded.loc[key["coffee"], "phash"] == filtered.loc[key["coffee"], "phash"]  # the filter's, not again
    assert imagehash.hex_to_hash(embedded.loc[key["coffee"], "phash"]) - imagehash.phash(coffee) <= 4
    assert embedded.loc[key["coffee"], "sha256"] == hashlib.sha256(run["files"]["coffee"]).hexdigest()
    d = pd.Series(list(read_descriptors(run["embedded"])), index=run["embedded"]["key"])
    assert all(abs(np.linalg.norm(v) - 1) < 1e-2 for v in d)
    assert d[key["coffee"]] @ d[key["coffee_copy"]] > 0.95
    assert d[key["coffee"]] @ d[key["astronaut"]] < 0.85


def test_dedup_removes_the_copy_and_says_of_what(run):
    decisions = run["decisions"].set_index("key")
    key = run["key_of"]
    pair = decisions.loc[[key["coffee"], key["coffee_copy"]]]
    assert pair["kept"].sum() == 1
    removed = pair[~pair["kept"]].iloc[0]
    assert removed["duplicate_of"] in (key["coffee"], key["coffee_copy"])
    assert removed["dedup_layer"] in ("phash", "descriptor")
    assert decisions.loc[[key[n] for n in ("astronaut", "chelsea", "rocket")], "kept"].all()


def test_captions_four_levels_within_budget(run, vlm):
    captions = run["captions"]
    assert set(captions["key"]) == set(run["decisions"].loc[run["decisions"]["kept"], "key"])
    budgets = {lv: spec["max_new_tokens"] for lv, spec in run["cfg"]["caption"]["levels"].items()}
    for level in LEVELS:
        assert captions[f"{level}_tokens"].between(0, budgets[level]).all()
        flags = captions[f"{level}_flags"].str.split(";").explode()
        assert flags[flags != ""].isin(RULES).all()
        assert not captions[level].str.contains("<|", regex=False).any()
        scored = captions.loc[captions["caption_status"] != "failed", f"{level}_agreement"]
        assert scored.between(-1, 1).all()  # every caption the tiny model wrote got a score
    assert (captions["caption_model_revision"] == vlm.revision).all()
    assert captions["caption_prompt_hash"].nunique() == 1


def test_captions_record_their_generation(run, vlm):
    captions = run["captions"]
    generation = json.loads(captions["caption_generation"].iloc[0])
    assert generation["do_sample"] is False and generation["backend"] == "transformers"
    assert generation["max_new_tokens"] == {"label": 3, "short": 5, "medium": 8, "long": 12}
    assert ((captions["caption_model_id"] == vlm.model_id).all()
            and (captions["caption_model_revision"] == vlm.revision).all())


def test_a_killed_caption_job_resumes_from_its_part_files(run, vlm, captioner, tmp_path, monkeypatch):
    """Kill the job after its first batch (the second generate call raises), rerun: only the
    missing batches are generated and the table equals an uninterrupted run's, byte for byte."""
    cfg = {**run["cfg"]["caption"], "batch_size": 1}
    args = (run["decisions"], run["records"], run["root"] / "raw" / "00000.tar", cfg)
    whole = caption_shard(*args, tmp_path / "whole.parquet", model=captioner)
    assert len(whole) >= 2
    calls = []
    real = type(vlm).generate_levels

    def dies_on_second_batch(self, images, levels):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, images, levels)

    monkeypatch.setattr(type(vlm), "generate_levels", dies_on_second_batch)
    out = tmp_path / "captions.parquet"
    with pytest.raises(KeyboardInterrupt):
        caption_shard(*args, out, model=captioner)
    assert not out.exists() and len(list(tmp_path.glob("captions.parquet.parts/*/*.parquet"))) == 1
    calls.clear()
    monkeypatch.setattr(type(vlm), "generate_levels", lambda self, images, levels: (
        calls.append(len(images)), real(self, images, levels))[1])
    resumed = caption_shard(*args, out, model=captioner)
    assert len(calls) == len(whole) - 1  # the finished batch was not generated again
    assert out.read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert resumed.equals(whole)
    assert not (tmp_path / "captions.parquet.parts").exists()


def test_vllm_backend_without_vllm_names_the_environment_that_has_it(tiny_models):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"workflow/envs/gpu.yaml"):
            load_model({"caption": {"backend": "vllm", "model": str(tiny_models["vlm"]), "max_pixels": None,
                                    "device": "cpu"}})
    else:
        pytest.skip("vllm is installed: the GPU test covers it")


def test_packed_tars_hold_original_bytes_and_valid_records(run):
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in run["files"].values()}
    total = 0
    for split, stem in run["packed"].items():
        index = run["indexes"][split]
        total += len(index)
        blob = stem.with_suffix(".tar").read_bytes()
        with tarfile.open(stem.with_suffix(".tar")) as tar:
            names = tar.getnames()
        assert names == sorted(names)
        for row in index.itertuples():
            image = blob[row.image_offset: row.image_offset + row.image_size]
            assert image == by_sha[row.sha256]
            meta = SampleRecord.model_validate_json(blob[row.json_offset: row.json_offset + row.json_size])
            assert meta.split == split and meta.key == row.key and meta.attribution == ATTRIBUTION
    assert total == len(run["captions"])


def test_provenance_conserves_keys_and_card_lists_tiers(run):
    prov = run["provenance"]
    assert sorted(prov["key"]) == sorted(run["manifest"]["key"])
    assert prov["state"].isin(["packed", "dropped", "failed"]).all()
    assert (prov["state"] == "packed").sum() == len(run["captions"])
    assert prov.set_index("key").loc[run["key_of"]["nc"], "stage"] == "fetch"
    packed_dir = run["root"] / "packed"
    card = (packed_dir / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in header["configs"]} >= {"nano", "lite", "full"}
    sums = dict(line.split("  ")[::-1] for line in (packed_dir / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((packed_dir / name).read_bytes()).hexdigest() == digest
    partition_json = json.loads((run["root"] / "manifests" / "partition.json").read_text())
    assert partition_json["shards"] == 1
    summary = summarise(run["root"])
    assert summary["conserved"]


def test_the_assess_job_decodes_each_image_once_and_writes_what_the_stages_write(run, vlm, tiny_models, tmp_path,
                                                                                 monkeypatch):
    """Judge then embed with the images decoded once (the judge hands its survivors' pixels
    to the descriptor): the same tables as the two stages run apart, which decode twice."""
    import shutil

    import gpic.images
    from gpic.inference.copy_detector import CopyDetector
    from gpic.layout import Layout

    for stage in ("manifests", "fetch", "filter", "raw"):
        shutil.copytree(run["root"] / stage, tmp_path / stage)
    files = Layout(tmp_path).shard("00000")
    decoded, real = [], gpic.images.load_rgb
    monkeypatch.setattr(gpic.images, "load_rgb", lambda data, *a: (decoded.append(data), real(data, *a))[1])
    detector = CopyDetector(tiny_models["copy_detector"])
    judged, embedded = assess_shard(files, run["cfg"], vlm=vlm, detector=detector)
    assert len(decoded) == len(judged) == len(set(decoded))  # every judged image decoded once, and only once
    assert judged.equals(run["judged"]) and embedded.equals(run["embedded"])
    assert read_table(files.table("judge")).equals(read_table(run["root"] / "judge" / "00000.parquet"))
    assert read_table(files.table("embed")).equals(read_table(run["root"] / "embed" / "00000.parquet"))
    assert (embedded["embed_status"] == "ok").all() and len(embedded) == (judged["judge_verdict"] == "pass").sum()
    assert detector.forward_calls == 1  # every survivor's shape in one forward pass
    decoded.clear()
    embed_shard(embedded["key"].tolist(), run["manifest"], run["records"], run["filtered"], files.raw,
                run["cfg"]["embed"], tmp_path / "apart.parquet", detector=detector)
    assert len(decoded) == len(embedded)  # the stage alone decodes again


def test_bench_caption_compares_with_the_current_path(tiny_models):
    from typer.testing import CliRunner

    from gpic.cli import app

    result = CliRunner().invoke(app, ["bench", "caption", "--model", str(tiny_models["vlm"]), "--images", "2",
                                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    figures = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    assert figures["images"] == "2" and float(figures["ours_tokens_per_s"]) > 0 and float(figures["ratio"]) > 0
    assert figures["same_captions"] == "8/8"  # greedy, same model: the shared prefix changes no caption
    assert float(figures["vision_passes_per_image"]) == 1 and float(figures["baseline_vision_passes_per_image"]) == 4
    assert int(figures["image_tokens"]) > 0 and 1.5 < float(figures["flop_ratio_h100"]) < 4
    assert float(figures["hygiene_s"]) > 0 and float(figures["scorer_s"]) > 0 and float(figures["added_share"]) > 0
    assert 0.005 < float(figures["scorer_flop_share_h100"]) < 0.05  # SigLIP base against Qwen3-VL-4B's captions
    assert float(figures["scorer_flop_share"]) > 0 and figures["scorer"] == "siglip-proportional"


def test_bench_judge_and_embed_compare_with_the_current_path(tiny_models):
    from typer.testing import CliRunner

    from gpic.cli import app

    result = CliRunner().invoke(app, ["bench", "judge", "--model", str(tiny_models["vlm"]), "--images", "2",
                                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    f = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    assert float(f["vision_passes_per_image"]) == 1 and float(f["baseline_vision_passes_per_image"]) == 2
    assert float(f["ratio"]) > 0 and 1.2 < float(f["flop_ratio_h100"]) < 3

    result = CliRunner().invoke(app, ["bench", "embed", "--images", "12", "--batch-size", "6"])
    assert result.exit_code == 0, result.output
    f = dict(item.split("=") for item in result.output.strip().splitlines()[-1].split())
    assert int(f["ours_forward_passes"]) == 2 and int(f["baseline_forward_passes"]) == int(f["shapes"]) == 12
    assert float(f["cosine_min"]) >= 0.99 and float(f["phash_hamming_median"]) <= 4
