"""One self-contained HTML page about a run: the funnel, what the corpus looks like, what was
dropped and why (with thumbnails), and the cost table. Plots are PNGs inlined as data URLs,
so the page can be mailed or archived as one file. The HTML comes from Jinja templates
(templates/) with autoescape on: no value reaches the page unescaped."""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from jinja2 import Environment, PackageLoader, StrictUndefined  # noqa: E402
from markupsafe import Markup  # noqa: E402

from gpic.config import Config  # noqa: E402
from gpic.contracts import LEVELS, SPLITS  # noqa: E402
from gpic.images import load_rgb  # noqa: E402
from gpic.layout import Layout  # noqa: E402
from gpic.review import printable  # noqa: E402
from gpic.review.audit import dropped, raw_bytes  # noqa: E402
from gpic.review.cost import estimate  # noqa: E402
from gpic.stages.caption import audit as caption_audit  # noqa: E402
from gpic.stages.provenance import summarise  # noqa: E402
from gpic.stages.publish import repeated_line  # noqa: E402
from gpic.store import atomic_path, read_table  # noqa: E402

THUMB = 160


def shown(value: object) -> object:
    """What a template's {{ value }} prints, before autoescape: source metadata and model output
    made printable (control characters, bidi overrides escaped), so no template can forget it.
    Markup is HTML a macro built from values already shown, kept as it is."""
    return value if isinstance(value, Markup) else printable(value)


ENV = Environment(loader=PackageLoader("gpic.review", "templates"), autoescape=True, finalize=shown,
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(number=lambda value, digits=0: f"{value:,.{digits}f}", percent=lambda value: f"{value:.0%}")


def section(name: str, *args, **kwargs) -> Markup:
    """A section's HTML: its macro in sections.html.j2, called with what this module computed."""
    return getattr(ENV.get_template("sections.html.j2").module, name)(*args, **kwargs)


def png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail(data: bytes) -> str | None:
    """A JPEG data URL of a small version of the image (normalised as every stage sees it),
    or None when it does not decode (dropped images include the corrupt ones)."""
    try:
        image = load_rgb(data, max_side=THUMB)
    except Exception:  # noqa: BLE001 (any decoder error means: no thumbnail)
        return None
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def read_member(tar: Path, offset: int, size: int) -> bytes:
    with open(tar, "rb") as stream:
        stream.seek(offset)
        return stream.read(size)


def funnel_section(summary: dict) -> Markup:
    counts = pd.DataFrame(summary["reasons"])
    counts["reason"] = counts["reason"].replace("", "-")
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(counts) + 1))
    colours = {"packed": "#3a7", "dropped": "#d84", "failed": "#c33"}
    ax.barh([f"{r.state}: {r.stage} / {r.reason}" for r in counts.itertuples()], counts["keys"],
            color=[colours.get(state, "#888") for state in counts["state"]])
    ax.invert_yaxis()
    ax.set_xlabel("keys")
    total = int(counts["keys"].sum())
    ax.set_title(f"Every key's final state, by stage and reason ({total} keys)")
    states = counts.groupby("state")["keys"].sum().to_dict()
    return section("funnel", png(fig), total, len(summary["shards"]), states, summary["conserved"])


def judge_section(summary: dict) -> Markup:
    """How many judged keys got scores that decide nothing (answer words with little of the
    probability, or no preference): such a judge passes or drops at random, and the funnel
    alone would not show it."""
    return section("judge", summary["judge"])


REPORT_COLUMNS = ["key", "split", "tar", "width", "height", "license_id", "source", "image_offset", "image_size",
                  *LEVELS]
PLOTTED = 200_000  # index rows the plots and the sample grid read at most; the counts read every row


def packed_view(packed_root: Path, rows: int = PLOTTED) -> tuple[pd.DataFrame, dict]:
    """(every k-th row of every index, exact totals): one index file and the report's columns at a
    time, so a 110M-sample corpus costs the report a 200k-row table, not all of its captions."""
    paths = sorted(Path(packed_root).glob("*/*.parquet"))
    total = sum(pq.read_metadata(path).num_rows for path in paths)
    step = max(1, math.ceil(total / rows))
    totals = {"packed": total, "step": step, "width": 0, "height": 0, "split": Counter(), "license_id": Counter(),
              "source": Counter()}
    parts = []
    for path in paths:
        index = read_table(path, columns=REPORT_COLUMNS)
        for name in ("split", "license_id", "source"):
            totals[name].update(index[name])
        totals["width"] += int(index["width"].sum())
        totals["height"] += int(index["height"].sum())
        parts.append(index.iloc[::step])
    sample = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REPORT_COLUMNS)
    return sample, totals


def duplicate_clusters(decisions_path: Path) -> pd.Series:
    """The size of every cluster of two or more images, one row group (a shard) at a time: the
    decisions of 110M keys would take some 20 GB as a table of their cluster names."""
    sizes = {}
    with pq.ParquetFile(decisions_path) as file:
        for batch in file.iter_batches(columns=["cluster", "cluster_size"]):
            batch = batch.filter(pc.greater(batch.column("cluster_size"), 1))
            sizes.update(zip(batch.column("cluster").to_pylist(), batch.column("cluster_size").to_pylist()))
    return pd.Series(sizes, dtype=np.int64)


def corpus_section(index: pd.DataFrame, clusters: pd.Series, totals: dict | None = None) -> Markup:
    """Plots of what was packed (from `index`, every `step`-th sample when `totals` says so; the
    counts are exact) and of the duplicate clusters' sizes; a run that packed nothing, or left a
    split empty, says so."""
    totals = totals or {"packed": len(index), "step": 1, "width": index["width"].sum(),
                        "height": index["height"].sum(), **{name: Counter(index[name])
                                                            for name in ("split", "license_id", "source")}}
    packed = totals["packed"]
    if not packed:
        return section("corpus", packed)
    splits = {s: totals["split"].get(s, 0) for s in SPLITS}
    fig1, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.hist(index["width"], bins=30, alpha=.6, label="width")
    a.hist(index["height"], bins=30, alpha=.6, label="height")
    a.set_title("Resolution (pixels)")
    a.legend()
    b.hist(index["width"] / index["height"], bins=30, color="#57a")
    b.set_title("Aspect ratio (width / height)")
    fig2, (c, d) = plt.subplots(1, 2, figsize=(10, 3.2))
    pd.Series(totals["license_id"]).sort_values(ascending=False).plot.barh(ax=c, color="#3a7",
                                                                            title="Licences (packed)")
    pd.Series(totals["source"]).sort_values(ascending=False).plot.barh(ax=d, color="#a73", title="Sources (packed)")
    fig3, (e, f) = plt.subplots(1, 2, figsize=(10, 3.2))
    words = pd.DataFrame({level: index[level].fillna("").str.count(r"\S+") for level in LEVELS})  # no word lists
    e.boxplot([words[level] for level in LEVELS], tick_labels=list(LEVELS))
    e.set_title("Caption length (words) per level")
    if len(clusters):
        f.hist(clusters, bins=range(2, int(clusters.max()) + 2), color="#a5a", align="left")
    f.set_title(f"Duplicate clusters by size ({len(clusters)} clusters)")
    f.set_xlabel("images in cluster")
    return section("corpus", packed, splits, empty=[s for s, n in splits.items() if n == 0],
                   width=totals["width"] / packed, height=totals["height"] / packed, step=totals["step"],
                   plotted=len(index), plots=[png(fig) for fig in (fig1, fig2, fig3)])


def sample_captions(row) -> tuple[str, str]:
    """The two shortest captions of an index row: label and short for ours; an index of GPIC
    records (`gpic index`) holds one level per sample, shown instead of an empty label."""
    held = [text for text in (getattr(row, level) for level in LEVELS) if text] + ["", ""]
    return held[0], held[1]


def kept_section(results: Path, index: pd.DataFrame, n: int) -> Markup:
    cells = []
    for row in index.sort_values("key").head(n).itertuples():
        data = read_member(Layout(results).packed_root / row.split / row.tar, row.image_offset, row.image_size)
        label, short = sample_captions(row)
        cells.append({"src": thumbnail(data), "label": label, "short": short, "key": row.key,
                      "licence": row.license_id})
    return section("kept", cells)


def dropped_section(results: Path, n_per_reason: int) -> Markup:
    """Dropped keys whose bytes were fetched (filter, judge, dedup), a few per kind of reason,
    read back from the raw shards: the removed set is kept, so it can be looked at."""
    def first(table: pd.DataFrame) -> pd.DataFrame:
        return table.sort_values(["stage", "kind", "key"]).groupby(["stage", "kind"], sort=False).head(n_per_reason)

    candidates = []  # a shard at a time: the first keys per kind of each shard, then the first of those
    for path in sorted(Layout(results).tables("provenance").glob("*.parquet")):
        table = dropped(results, shard=path.stem)
        table = table[table["stage"].isin(["filter", "judge", "dedup"])]
        candidates.append(first(table.assign(kind=table["reason"].str.split(":").str[0])))
    picks = first(pd.concat(candidates, ignore_index=True)) if candidates else pd.DataFrame(
        columns=["key", "shard", "stage", "reason", "kind"])
    data: dict[str, bytes] = {}
    for shard, group in picks.groupby("shard"):
        data.update(raw_bytes(results, shard, group["key"].tolist()))
    cells = [{"src": thumbnail(data.get(row.key, b"")), "stage": row.stage, "reason": row.reason, "key": row.key}
             for row in picks.itertuples()]
    return section("dropped", cells, n_per_reason)


def captions_section(results: Path, audit: dict) -> Markup:
    """The caption audit (gpic.stages.caption.audit): findings per level and rule, openings
    before and after hygiene, frequent captions and trigrams, lengths, the agreement scores'
    distribution and, with their images, the captions the scorer trusts least and most."""
    levels = audit["levels"]
    plot = None
    if any(lv["histogram"] for lv in levels.values()):
        fig, axes = plt.subplots(1, len(levels), figsize=(12, 2.6), sharey=True)
        for ax, (level, figures) in zip(axes, levels.items()):
            if figures["histogram"]:
                counts, edges = figures["histogram"]
                ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#57a")
            ax.set_title(f"{level}: agreement")
        plot = png(fig)
    picks = [(level, end, e) for level, figures in levels.items() for end in ("low", "high") for e in figures[end]]
    data: dict[str, bytes] = {}
    for shard in sorted({e["shard"] for _, _, e in picks}):
        data.update(raw_bytes(results, shard, [e["key"] for _, _, e in picks if e["shard"] == shard]))
    cells = [{"src": thumbnail(data.get(e["key"], b"")), "level": level, "end": end, **e} for level, end, e in picks]
    rules = sorted({rule for lv in levels.values() for rule in lv["flags"]})
    return section("captions", audit, rules, repeated_line(audit), plot, cells)


def cost_section(cost: dict) -> Markup:
    return section("cost", cost)


def write_report(results: str | Path, config: Config, out: str | Path, samples: int = 24) -> Path:
    """Build the page from a finished run's files and write it atomically."""
    results = Path(results)
    summary = summarise(results)
    layout = Layout(results)
    index, totals = packed_view(layout.packed_root)
    sections = [funnel_section(summary), judge_section(summary),
                corpus_section(index, duplicate_clusters(layout.decisions), totals),
                kept_section(results, index, samples), dropped_section(results, 3),
                captions_section(results, caption_audit(layout.tables("captions"))),
                cost_section(estimate(results, config))]
    page = ENV.get_template("report.html.j2").render(results=results.resolve(), shards=config["shards"],
                                                     sections=sections)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
