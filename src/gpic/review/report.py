"""One self-contained HTML page about a run: the funnel, what the corpus looks like, what was
dropped and why (with thumbnails), and the cost table. Plots are PNGs inlined as data URLs,
so the page can be mailed or archived as one file."""

from __future__ import annotations

import base64
import html
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

from gpic.config import Config  # noqa: E402
from gpic.contracts import LEVELS, SPLITS  # noqa: E402
from gpic.images import load_rgb  # noqa: E402
from gpic.layout import Layout  # noqa: E402
from gpic.review import printable  # noqa: E402
from gpic.review.audit import dropped, raw_bytes  # noqa: E402
from gpic.review.cost import estimate  # noqa: E402
from gpic.stages.provenance import summarise  # noqa: E402
from gpic.store import atomic_path, read_table  # noqa: E402

THUMB = 160
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.grid{display:flex;flex-wrap:wrap;gap:10px} .plots{display:grid;gap:12px}
figure{margin:0;width:170px;font-size:11px} figure img{width:160px;height:160px;object-fit:cover;border-radius:4px}
figcaption{word-break:break-word} code{font-size:10px;color:#666}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} .plots img{width:100%} .muted{color:#777}
"""


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


def shown(text: str) -> str:
    """Source metadata and model output on the page: escaped for HTML and made printable."""
    return html.escape(printable(text))


def read_member(tar: Path, offset: int, size: int) -> bytes:
    with open(tar, "rb") as stream:
        stream.seek(offset)
        return stream.read(size)


def figure_html(src: str | None, lines: list[str]) -> str:
    image = f'<img src="{src}" alt="">' if src else '<div class="muted">(no preview: does not decode)</div>'
    return f"<figure>{image}<figcaption>{'<br>'.join(lines)}</figcaption></figure>"


def funnel_section(summary: dict) -> str:
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
    states = counts.groupby("state")["keys"].sum()
    conserved = "every key has exactly one final state" if summary["conserved"] else "KEYS LOST OR DUPLICATED"
    return (f'<h2>Funnel</h2><img src="{png(fig)}" alt="funnel" style="width:100%">'
            f"<p>{total} keys in {len(summary['shards'])} shards: "
            + ", ".join(f"{n} {state}" for state, n in states.items()) + f"; {conserved}.</p>")


def judge_section(summary: dict) -> str:
    """How many judged keys got scores that decide nothing (answer words with little of the
    probability, or no preference): such a judge passes or drops at random, and the funnel
    alone would not show it."""
    judge = summary["judge"]
    line = (f"<h2>Judge scores</h2><p>{judge['judged']} keys judged; {judge['low_mass']} "
            f"({judge['low_mass_fraction']:.0%}) with under half the next-token probability on the accept and "
            f"reject words, {judge['undecided']} ({judge['undecided_fraction']:.0%}) undecided (p_reject near "
            "0.5).</p>")
    if judge["warning"]:
        line += f'<p style="color:#b00;font-weight:bold">Warning: {html.escape(judge["warning"])}.</p>'
    return line


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


def corpus_section(index: pd.DataFrame, clusters: pd.Series, totals: dict | None = None) -> str:
    """Plots of what was packed (from `index`, every `step`-th sample when `totals` says so; the
    counts are exact) and of the duplicate clusters' sizes; a run that packed nothing, or left a
    split empty, says so."""
    totals = totals or {"packed": len(index), "step": 1, "width": index["width"].sum(),
                        "height": index["height"].sum(), **{name: Counter(index[name])
                                                            for name in ("split", "license_id", "source")}}
    packed = totals["packed"]
    counts = pd.Series({s: totals["split"].get(s, 0) for s in SPLITS})
    splits = ", ".join(f"{n} {s}" for s, n in counts.items())
    empty = [s for s, n in counts.items() if n == 0]
    several = len(empty) > 1
    note = (f" The {', '.join(empty)} split{'s are' if several else ' is'} empty: no key of "
            f"{'these splits' if several else 'this split'} was packed (too few keys for splits.*_fraction, or "
            f"all dropped); {'their' if several else 'its'} shards hold no sample and the dataset card leaves "
            f"{'them' if several else 'it'} out." if empty and packed else "")
    if totals["step"] > 1:
        note += f" The plots of resolution and caption length show every {totals['step']}th sample ({len(index)})."
    if not packed:
        return ("<h2>The corpus</h2><p><b>No sample was packed</b>: every key was dropped or failed (the funnel "
                "above says where; <code>gpic dropped</code> lists them).</p>")
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
    return (f"<h2>The corpus</h2><p>{packed} packed samples ({splits}); mean resolution "
            f"{totals['width'] / packed:.0f}x{totals['height'] / packed:.0f}.{note}</p><div class='plots'>"
            + "".join(f'<img src="{png(fig)}" alt="">' for fig in (fig1, fig2, fig3)) + "</div>")


def sample_captions(row) -> tuple[str, str]:
    """The two shortest captions of an index row: label and short for ours; an index of GPIC
    records (`gpic index`) holds one level per sample, shown instead of an empty label."""
    held = [text for text in (getattr(row, level) for level in LEVELS) if text] + ["", ""]
    return held[0], held[1]


def kept_section(results: Path, index: pd.DataFrame, n: int) -> str:
    cells = []
    for row in index.sort_values("key").head(n).itertuples():
        data = read_member(Layout(results).packed_root / row.split / row.tar, row.image_offset, row.image_size)
        label, short = sample_captions(row)
        cells.append(figure_html(thumbnail(data), [f"<b>{shown(label)}</b>", shown(short),
                                                   f"<code>{row.key}</code> {shown(row.license_id)}"]))
    if not cells:
        return "<h2>Kept samples</h2><p>None: no sample was packed.</p>"
    return f"<h2>Kept samples</h2><p>The first {len(cells)} by key, with label and short caption.</p>" \
           f"<div class='grid'>{''.join(cells)}</div>"


def dropped_section(results: Path, n_per_reason: int) -> str:
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
    cells = [figure_html(thumbnail(data.get(row.key, b"")),
                         [f"<b>{shown(row.stage)}: {shown(row.reason)}</b>", f"<code>{row.key}</code>"])
             for row in picks.itertuples()]
    return f"<h2>Dropped samples</h2><p>Up to {n_per_reason} per reason; every dropped image stays in " \
           f"<code>results/raw/</code> (<code>gpic dropped</code>, <code>gpic lineage KEY</code>).</p>" \
           f"<div class='grid'>{''.join(cells)}</div>"


def cost_section(cost: dict) -> str:
    head = "<tr><th>job</th><th>images at target</th><th>source</th><th>CPU core-h</th><th>GPU-h</th>" \
           "<th>USD</th><th>wall h</th></tr>"
    body = "".join(
        f"<tr><td>{j['job']}</td><td>{j['target_images']:,.0f}</td>"
        f"<td>{html.escape(j['source'])}"
        f"{' (' + html.escape(j['measured_on']) + ')' if 'measured_on' in j else ''}</td>"
        f"<td>{j.get('cpu_core_hours', 0):,.1f}</td><td>{j.get('gpu_hours', 0):,.1f}</td>"
        f"<td>{j.get('usd', 0):,.0f}</td><td>{j.get('wall_hours', 0):,.1f}</td></tr>" for j in cost["jobs"])
    t, s = cost["totals"], cost["storage"]
    egress = ", ".join(f"{tier} {e['tb']:.2f} TB (${e['usd']:,.0f})" for tier, e in cost["egress_per_download"].items())
    return (f"<h2>Cost at target scale</h2><table>{head}{body}</table>"
            f"<p>Compute ${t['compute_usd']:,.0f}: {t['cpu_core_hours']:,.0f} CPU core-hours, {t['gpu_hours']:,.0f} "
            f"GPU-hours, about {t['wall_hours']:,.0f} h on {cost['cluster']['gpus']} GPUs and "
            f"{cost['cluster']['cpu_cores']} cores. Storage {s['packed_tb']:.1f} TB packed + {s['raw_tb']:.1f} TB raw "
            f"(${s['usd_per_month']:,.0f}/month). One download of each tier: {egress}.</p>"
            + "".join(f"<p class='muted'>{html.escape(note)}</p>" for note in cost["notes"]))


def write_report(results: str | Path, config: Config, out: str | Path, samples: int = 24) -> Path:
    """Build the page from a finished run's files and write it atomically."""
    results = Path(results)
    summary = summarise(results)
    layout = Layout(results)
    index, totals = packed_view(layout.packed_root)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>GPIC run report</title><style>{STYLE}</style>"
            f"</head><body><h1>GPIC run report</h1><p class='muted'>{html.escape(str(results.resolve()))}, "
            f"{config['shards']} shards</p>" + funnel_section(summary) + judge_section(summary)
            + corpus_section(index, duplicate_clusters(layout.decisions), totals)
            + kept_section(results, index, samples) + dropped_section(results, 3)
            + cost_section(estimate(results, config)) + "</body></html>")
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
