"""`gpic bench scale`: the synthesized run is one the pipeline's own checks accept (verify,
summary, the stage tables' columns), each step's peak RSS is its own, the fit extrapolates, and
every step runs at two sizes with the figures named as the project keeps them."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpic.bench import figures_line
from gpic.bench.scale import (
    CAPTION_COLUMNS,
    EMBED_COLUMNS,
    STEPS,
    Measured,
    Pools,
    bench_config,
    bench_scale,
    figures,
    fit,
    measure,
    synthesize_assessed,
    synthesize_captioned,
    write_sources,
)
from gpic.config import load_config
from gpic.layout import Layout
from gpic.review.verify import verify
from gpic.stages import fetch as fetching
from gpic.stages import filter as filtering
from gpic.stages import judge as judging
from gpic.stages import partition, provenance
from gpic.store import read_table

LAST = ["worst_rss_gb_110m", "worst_hours_110m", "step_rss", "step_hours"]


def synthesized(folder, n: int, shards: int, real_dedup: bool):
    """A synthesized run of n keys in folder/results, as bench_scale builds it."""
    pools = Pools(0)
    config = bench_config(folder, shards, write_sources(folder / "sources", n, pools=pools))
    cfg = load_config(config)
    layout = Layout(folder / "results")
    partition.run(layout, cfg)
    synth = synthesize_assessed(layout, cfg, 0, pools)
    if real_dedup:
        from gpic.stages import dedup

        dedup.run(layout, cfg)
    else:
        synth.planted_decisions()
    synthesize_captioned(synth)
    return layout, cfg, synth


def test_synthesized_run_passes_verify_with_the_stages_own_columns(tmp_path):
    layout, cfg, synth = synthesized(tmp_path, 1500, 6, real_dedup=False)
    results = layout.root
    # every check of `gpic verify`: checksums, each index against its tar (offsets, sha256 of the
    # member, the JSON record), no key packed twice, every key in one final state
    from gpic.stages import publish

    publish.run(layout, cfg)
    assert verify(results) == []
    summary = provenance.summarise(results)
    assert summary["conserved"] and not summary["judge"]["warning"]

    shard = "00002"
    stamped = {"fetch": ["fetch_config_hash", "fetch_version"],
               "filter": ["filter_config_hash", "filter_version", "filter_scores_hash"],
               "judge": ["judge_config_hash", "judge_version", "judge_prompt_hash", "judge_model_id",
                         "judge_model_revision"],
               "embed": ["embed_config_hash", "embed_version", "embed_model_id", "embed_model_revision"],
               "captions": ["caption_config_hash", "caption_version", "caption_prompt_hash", "caption_decoding",
                            "caption_generation", "caption_model_id", "caption_model_revision",
                            "caption_agreement_model_id", "caption_agreement_model_revision"]}
    criteria = [f"{c}_{x}" for c in cfg["judge"]["criteria"] for x in ("p_reject", "mass")]
    expected = {"fetch": fetching.COLUMNS, "filter": filtering.COLUMNS + stamped["filter"],
                "judge": judging.COLUMNS + criteria + stamped["judge"], "embed": EMBED_COLUMNS + stamped["embed"],
                "captions": CAPTION_COLUMNS + stamped["captions"]}
    for table, columns in expected.items():
        assert list(read_table(layout.table(table, shard)).columns) == columns, table
    embed = read_table(layout.table("embed", shard))
    assert embed["descriptor"].map(len).eq(512 * 2).all() and embed["phash"].str.fullmatch("[0-9a-f]{16}").all()
    vectors = np.frombuffer(b"".join(embed["descriptor"]), np.float16).reshape(len(embed), 512).astype(np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-2)

    # proportions: ~92% packed; the planted copies are exactly the dedup drops
    states = pd.concat([read_table(layout.table("provenance", f"{i:05d}")) for i in range(6)])
    assert 0.88 < (states["state"] == "packed").mean() < 0.96
    planted = sum(len(p.copy) for p in synth.planted.values())
    assert planted > 0 and (states["stage"] == "dedup").sum() == planted
    assert {"partition", "fetch", "filter", "judge", "dedup"} <= set(states.loc[states["state"] == "dropped", "stage"])
    manifests = pd.concat([read_table(layout.table("manifests", f"{i:05d}")) for i in range(6)])
    assert 60 < manifests["url"].str.len().mean() < 110 and 40 <= manifests["title"].str.len().mean() <= 60
    assert 20 <= manifests["attribution"].str.len().mean() <= 40


def test_the_real_dedup_finds_the_planted_copies(tmp_path):
    layout, _, synth = synthesized(tmp_path, 3000, 4, real_dedup=True)
    decisions = read_table(layout.decisions)
    planted = {c: o for p in synth.planted.values() for c, o in zip(p.copy, p.original, strict=True)}
    removed = decisions[~decisions["kept"]]
    pairs = {frozenset(pair) for pair in zip(removed["key"], removed["duplicate_of"], strict=True)}
    found = sum(frozenset((c, o)) in pairs for c, o in planted.items())
    assert len(planted) > 30 and found >= 0.95 * len(planted)
    assert len(removed) <= len(planted)  # nothing else linked: distinct images stay
    assert set(removed["dedup_layer"]) == {"exact", "phash", "descriptor"}


def test_the_embed_and_caption_columns_are_the_stages():
    from gpic.stages import caption, embed

    assert EMBED_COLUMNS == embed.COLUMNS and CAPTION_COLUMNS == caption.COLUMNS


def test_measure_takes_the_childs_own_peak_and_names_a_failure(tmp_path):
    held = np.ones(300 << 18, np.float32)  # this process holds 300 MB more than its child will
    child = "import numpy as np; x = np.ones(100 << 18, np.float32); print('done')"
    m = measure([sys.executable, "-c", child], tmp_path / "ok.log", tmp_path)
    assert not m.error and 100 < m.rss_mb < 250 and m.seconds > 0 and held.sum() > 0
    m = measure([sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"], tmp_path / "bad.log", tmp_path)
    assert m.error.startswith("exit 3") and "bad input" in m.error


def test_fit_is_least_squares_with_no_negative_slope():
    a, b = fit([1e5, 3e5, 1e6], [2 + 1e-5 * n for n in (1e5, 3e5, 1e6)])
    assert a == pytest.approx(2) and b == pytest.approx(1e-5)
    assert fit([1e5, 3e5], [5.0, 4.0]) == (4.5, 0.0)  # noise must not extrapolate to a negative cost
    assert all(math.isnan(v) for v in fit([1e5], [5.0]))


def test_figures_name_each_step_and_size_and_end_with_the_worst():
    per_size = {s: {100: Measured(1.0 + i, 100.0 + i, 1.0), 300: Measured(1.5 + 2 * i, 150.0 + i * i, 1.0)}
                for i, s in enumerate(STEPS)}
    per_size["dedup"][300] = Measured(error="skipped: projected peak 9 MB")
    f = figures([100, 300], 16, STEPS, per_size, 2.0, 0.92, 2000)
    assert list(f)[-4:] == LAST and f["keys"] == "100,300" and f["failed"] == "dedup@300"
    assert math.isnan(f["dedup_s_300"]) and math.isnan(f["dedup_hours_110m"])
    assert f["step_hours"] == "status" and f["step_rss"] == "status"  # the steepest slopes
    assert f["status_hours_110m"] == pytest.approx((1.0 + 7 + (0.5 + 7) / 200 * (110e6 - 100)) / 3600)
    line = figures_line(f)
    assert line.split()[-1] == "step_hours=status" and line.split()[0] == "keys=100,300"


def test_cli_measures_the_chosen_steps(tmp_path):
    result = CliRunner().invoke(__import__("gpic.cli", fromlist=["app"]).app,
                                ["bench", "scale", "--keys", "400", "--keys", "800", "--shards", "4",
                                 "--steps", "status", "--tar-gb", "0.01", "--work", str(tmp_path)])
    assert result.exit_code == 0, result.output
    last = dict(item.split("=", 1) for item in result.output.strip().splitlines()[-1].split())
    assert list(last)[-4:] == LAST and last["failed"] == "none" and last["step_hours"] == "status"
    assert {"status_s_400", "status_rss_mb_800", "status_hours_110m"} <= set(last)
    assert not any(k.startswith("dedup") for k in last)
    status = json.loads(subprocess.run([sys.executable, "-c", "from gpic.cli import app; app(prog_name='gpic')",
                                        "status", "--json", "--results", str(tmp_path / "keys-800" / "results"),
                                        "--config", str(tmp_path / "keys-800" / "config.yaml")],
                                       capture_output=True, text=True, check=True).stdout)
    pending = {row["job"]: len(row["pending"]) for row in status}
    assert all(pending[job] == 0 for job in ("partition", "prepare", "assess", "dedup", "caption", "provenance",
                                             "pack_heldout"))
    with pytest.raises(ValueError, match="unknown steps"):
        bench_scale([100], 4, ["summary", "nonsense"], tmp_path / "x")


@pytest.mark.slow
def test_every_step_runs_at_two_sizes_and_extrapolates(tmp_path):
    f = bench_scale([2000, 6000], 16, STEPS, tmp_path, tar_gb=0.02)
    assert f["failed"] == "none", f
    assert list(f)[-4:] == LAST and f["step_rss"] in STEPS and f["step_hours"] in STEPS
    for step in STEPS:
        for n in (2000, 6000):
            assert f[f"{step}_s_{n}"] > 0 and f[f"{step}_rss_mb_{n}"] > 0
        for name in ("hours_110m", "rss_gb_110m"):
            assert math.isfinite(f[f"{step}_{name}"]) and f[f"{step}_{name}"] > 0
    assert f["worst_rss_gb_110m"] == max(f[f"{s}_rss_gb_110m"] for s in STEPS)
    assert f["worst_hours_110m"] == max(f[f"{s}_hours_110m"] for s in STEPS)
    assert 0 < f["tar_sha256_s_per_gb"] < 60 and f["tar_tb_110m"] > 10
    # the steps ran on the files: the report and the card exist, the dedup job removed copies
    results = tmp_path / "keys-6000" / "results"
    assert (results / "report" / "index.html").stat().st_size > 10_000 and (results / "packed" / "SHA256SUMS").exists()
    decisions = read_table(results / "dedup" / "decisions.parquet")
    assert 0.015 < (~decisions["kept"]).mean() < 0.035
