"""The run report, the cost model and `gpic status`, on the demo workflow's real outputs."""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from gpic.cli import app
from gpic.config import validate_config
from gpic.review.cost import estimate

HOSTILE = "Sunset\x1b[2J\x1b[31m over \u202egpj.exe\u202c <script>alert(1)</script>"
INJECTED = "<img src=x onerror=alert(1)>"


def assert_shown_escaped(page: str) -> None:
    """Hostile text reaches the page printable (as `gpic.review.printable` writes it), then escaped."""
    assert "\x1b" not in page and "\u202e" not in page and "<script" not in page and "<img src=x" not in page
    assert "Sunset\\x1b[2J\\x1b[31m over \\u202egpj.exe\\u202c &lt;script&gt;alert(1)&lt;/script&gt;" in page


def demo_config(demo) -> dict:
    return validate_config(yaml.safe_load((demo / "config.yaml").read_text()))


@pytest.mark.slow
def test_workflow_writes_a_report_with_every_section(demo, provenance):
    page = (demo / "results" / "report" / "index.html").read_text()
    for heading in ("Funnel", "The corpus", "Kept samples", "Dropped samples", "Captions", "Cost at target scale"):
        assert f"<h2>{heading}</h2>" in page
    captions = page.split("<h2>Captions</h2>")[1].split("<h2>")[0]
    assert "by siglip-tiny, a model of another family" in " ".join(captions.split())
    assert "agreement score distribution" in captions
    assert captions.count("<figure>") == captions.count("data:image/jpeg") == 4 * 2 * 3  # both tails of each level
    assert "openings, raw" in captions and "mention gender terms" in captions
    assert f"{len(provenance)} keys in 8 shards" in page and "every key has exactly one final state" in page
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,', page)
    kept = page.split("<h2>Kept samples</h2>")[1].split("<h2>")[0]
    assert kept.count("<figure>") == 24 and kept.count("data:image/jpeg") == 24
    dropped = page.split("<h2>Dropped samples</h2>")[1].split("<h2>")[0]
    for reason in ("blurry", "near-blank", "over-exposed", "too small", "duplicate (exact)", "decode corrupt"):
        assert reason in dropped, reason
    assert "(no preview: does not decode)" in dropped  # the corrupt ones are shown as such
    assert len(thumbnails) > 24


@pytest.mark.slow
def test_report_page_shows_hostile_source_metadata_escaped(demo, tmp_path):
    """Titles, licences and drop reasons come from sources and models: on the page they may
    neither run script nor reorder or rewrite what a reviewer reads."""
    from gpic.review.report import write_report
    from gpic.store import read_table, write_table

    results = tmp_path / "results"
    shutil.copytree(demo / "results", results)
    for path in (results / "packed").glob("*/*.parquet"):
        write_table(read_table(path).assign(label=HOSTILE, license_id=INJECTED), path)
    path = results / "provenance" / "00000.parquet"
    provenance = read_table(path)
    provenance.loc[(provenance["state"] == "dropped") & (provenance["stage"] == "filter"), "reason"] = HOSTILE
    write_table(provenance, path)
    page = write_report(results, demo_config(demo), tmp_path / "index.html").read_text()
    assert_shown_escaped(page)
    kept = page.split("<h2>Kept samples</h2>")[1].split("<h2>")[0]
    assert kept.count("&lt;img src=x onerror=alert(1)&gt;") == 24
    assert "<b>filter: Sunset\\x1b[2J" in page.split("<h2>Dropped samples</h2>")[1]


@pytest.mark.slow
def test_cost_extrapolates_measured_cpu_and_assumed_gpu_figures(demo):
    results = demo / "results"
    cost = json.loads((results / "report" / "cost.json").read_text())
    jobs = {job["job"]: job for job in cost["jobs"]}
    for name in ("partition", "prepare", "dedup", "pack", "provenance"):
        assert jobs[name]["source"] == "measured" and jobs[name]["cpu_core_hours"] > 0, name
        m = jobs[name]["measured"]
        assert jobs[name]["cpu_core_hours"] == pytest.approx(
            m["cpu_s"] / m["images"] * jobs[name]["target_images"] / 3600)
    assert jobs["prepare"]["measured"]["images"] == sum(
        pq.read_metadata(p).num_rows for p in glob.glob(str(results / "fetch" / "*.parquet")))
    # the demo runs its models on the CPU: GPU-hours come from the configured rates
    assert jobs["caption"]["source"] == "assumed"
    assert jobs["caption"]["gpu_hours"] == pytest.approx(100e6 / 18.5 / 3600)
    packed = sorted(glob.glob(str(results / "packed" / "*" / "*.tar")))
    images = sum(pq.read_metadata(p.replace(".tar", ".parquet")).num_rows for p in packed)
    bpi = sum(Path(p).stat().st_size for p in packed) / images
    assert cost["storage"]["packed_bytes_per_image"] == pytest.approx(bpi)
    assert cost["storage"]["packed_tb"] == pytest.approx(bpi * 101.2e6 / 1e12)
    egress = cost["egress_per_download"]
    assert egress["nano"]["tb"] < egress["lite"]["tb"] < egress["full"]["tb"] == pytest.approx(
        cost["storage"]["packed_tb"])
    assert cost["totals"]["gpu_hours"] == pytest.approx(sum(j.get("gpu_hours", 0) for j in cost["jobs"]))


@pytest.mark.slow
def test_cost_uses_measured_gpu_rates_when_run_on_a_gpu(demo, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(demo / "results" / "benchmarks", results / "benchmarks")
    shutil.copytree(demo / "results" / "captions", results / "captions")
    config = demo_config(demo)
    config["caption"]["device"] = "cuda:0"
    caption = {job["job"]: job for job in estimate(results, config)["jobs"]}["caption"]
    m = caption["measured"]
    assert caption["source"] == "measured" and caption["images_per_gpu_s"] == pytest.approx(m["images"] / m["wall_s"])


@pytest.mark.slow
def test_status_lists_pending_blocks_from_the_files_on_disk(demo, tmp_path):
    result = CliRunner().invoke(app, ["status", "--results", str(demo / "results"), "--config",
                                      str(demo / "config.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    assert all(row["pending"] == [] for row in json.loads(result.output))
    (tmp_path / "done" / "prepare").mkdir(parents=True)
    (tmp_path / "done" / "prepare" / "00000-00003.json").write_text('{"files": {}, "shards": {}}')
    result = CliRunner().invoke(app, ["status", "--results", str(tmp_path), "--config", str(demo / "config.yaml"),
                                      "--json"])
    rows = {row["job"]: row for row in json.loads(result.output)}
    assert (rows["prepare"]["done"], rows["prepare"]["pending"]) == (1, ["00004-00007"])
    assert result.exit_code == 0 and rows["prepare"]["damaged"] == {}
    assert rows["caption"]["pending"] == ["00000-00003", "00004-00007"] and rows["report"]["done"] == 0
    assert rows["pack_heldout"]["pending"] == ["val/gpic_val_00000.tar", "test/gpic_test_00000.tar",
                                               "test/gpic_test_00001.tar"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_a_headless_browser(demo, tmp_path):
    shot = tmp_path / "report.png"
    run = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1200,6000", f"--screenshot={shot}",
                          (demo / "results" / "report" / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    content = np.nonzero(pixels.std(axis=1) > 5)[0]
    assert pixels.shape == (6000, 1200) and len(content) > 2000  # plots and thumbnails, not a blank page
    assert content.max() > 4000  # laid out down to the cost table


def test_the_report_reads_every_index_for_its_counts_but_plots_a_bounded_sample(tmp_path):
    """At 110M samples the report must not hold every caption: counts are exact over every
    index, the plotted table is every k-th row, at most `rows` of them."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpic.review.report import corpus_section, packed_view
    from gpic.stages.pack import INDEX_SCHEMA

    for split, n, licence in (("train", 700, "CC-BY-4.0"), ("val", 200, "CC0-1.0"), ("test", 100, "CC0-1.0")):
        empty = {pa.int64(): 0, pa.float64(): 0.1}
        rows = {name: [empty.get(INDEX_SCHEMA.field(name).type, "")] * n for name in INDEX_SCHEMA.names}
        rows.update(key=[f"{split}{i:04d}" for i in range(n)], split=[split] * n, tar=[f"gpic_{split}_00000.tar"] * n,
                    width=[400] * n, height=[300] * n, license_id=[licence] * n, source=["flickr"] * n,
                    label=["a cat"] * n)
        (tmp_path / split).mkdir()
        pq.write_table(pa.table(rows, schema=INDEX_SCHEMA), tmp_path / split / f"gpic_{split}_00000.parquet")
    sample, totals = packed_view(tmp_path, rows=100)
    assert (totals["packed"], totals["step"], len(sample)) == (1000, 10, 100)
    assert totals["split"] == {"train": 700, "val": 200, "test": 100}
    assert totals["license_id"] == {"CC-BY-4.0": 700, "CC0-1.0": 300}
    page = corpus_section(sample, pd.Series([], dtype="int64"), totals)
    assert "1000 packed samples (700 train, 200 val, 100 test); mean resolution 400x300." in page
    assert "every 10th sample (100)" in page


def test_duplicate_clusters_are_read_a_shard_at_a_time(tmp_path):
    """One size per cluster of two or more, whichever shard (row group) its members are in."""
    import pyarrow as pa

    from gpic.review.report import duplicate_clusters

    path = tmp_path / "decisions.parquet"
    shards = [{"cluster": ["a", "a", "b"], "cluster_size": [3, 3, 1]},
              {"cluster": ["a", "c", "c"], "cluster_size": [3, 2, 2]}]
    with pq.ParquetWriter(path, pa.schema([("cluster", pa.string()), ("cluster_size", pa.int64())])) as writer:
        for shard in shards:
            writer.write_table(pa.table(shard))
    assert pq.ParquetFile(path).num_row_groups == 2
    assert duplicate_clusters(path).sort_index().to_dict() == {"a": 3, "c": 2}


def test_sections_show_hostile_metadata_printable_and_escaped(tmp_path):
    """Without a workflow run: a kept sample's captions and licence, the judge's warning and the
    cost table's text, each hostile, come out printable and escaped."""
    import pandas as pd

    from gpic.review.report import cost_section, judge_section, kept_section

    from helpers import blank, jpeg_bytes

    image = jpeg_bytes(blank())
    tar = tmp_path / "packed" / "train" / "gpic_train_00000.tar"
    tar.parent.mkdir(parents=True)
    tar.write_bytes(image)
    index = pd.DataFrame({"key": ["k0"], "split": ["train"], "tar": [tar.name], "image_offset": [0],
                          "image_size": [len(image)], "license_id": [INJECTED], "label": [HOSTILE],
                          "short": [INJECTED], "medium": [""], "long": [""]})
    judge = {"judged": 1, "low_mass": 0, "low_mass_fraction": 0.0, "undecided": 0, "undecided_fraction": 0.0,
             "warning": HOSTILE}
    cost = {"jobs": [{"job": "caption", "target_images": 1e8, "source": INJECTED, "measured_on": HOSTILE}],
            "totals": {"compute_usd": 1, "cpu_core_hours": 1, "gpu_hours": 1, "wall_hours": 1},
            "storage": {"packed_tb": 1, "raw_tb": 1, "usd_per_month": 1}, "cluster": {"gpus": 1, "cpu_cores": 1},
            "egress_per_download": {"full": {"tb": 1, "usd": 1}}, "notes": [INJECTED]}
    kept = kept_section(tmp_path, index, 1)
    assert "data:image/jpeg;base64," in kept and "<b>Sunset\\x1b[2J" in kept
    page = kept + judge_section({"judge": judge}) + cost_section(cost)
    assert_shown_escaped(page)
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") == 4  # short caption, licence, job source, note


def test_every_value_on_the_page_goes_through_autoescape():
    """No template can print a value raw: autoescape is on, none turns it off or marks a value
    safe, every value is made printable first, and a section handed over as plain text is escaped."""
    from jinja2 import nodes

    from gpic.review.report import ENV, shown

    assert ENV.autoescape is True and ENV.finalize is shown
    assert set(ENV.list_templates()) == {"report.html.j2", "sections.html.j2"}
    for name in ENV.list_templates():
        tree = ENV.parse(ENV.loader.get_source(ENV, name)[0])
        assert not list(tree.find_all(nodes.EvalContextModifier)), name  # {% autoescape false %}
        assert "safe" not in {node.name for node in tree.find_all(nodes.Filter)}, name
    page = ENV.get_template("report.html.j2").render(results=HOSTILE, shards=INJECTED, sections=[INJECTED])
    assert_shown_escaped(page)
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") == 2
