"""What the licence gate makes of a finished collection's licence strings: counts per raw
(licence, URL) pair as the source printed it, per canonical id, and the pairs the gate cannot
read, so a team sees a new or drifting licence string before it costs a run (`gpic collect
COLLECTOR --report`). Parts are read one at a time, three columns each."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from gpic import licenses
from gpic.collect.common import REASON

COLUMNS = ["license", "license_url", REASON]


def licence_counts(parts: list[Path]) -> dict:
    """{"rows", "refused" (rows the collector refused for any reason), "pairs" ((text, url) ->
    rows), "canonical" (id or "(unreadable)" -> rows), "unreadable" ((text, url) -> the gate's
    reason)}. Pairs are counted per distinct value, so the gate runs once per pair, not per row."""
    pairs: Counter[tuple[str, str]] = Counter()
    rows = refused = 0
    for path in parts:
        table = pq.read_table(path, columns=COLUMNS)
        rows += table.num_rows
        refused += table.num_rows - table[REASON].null_count
        counted = table.group_by(["license", "license_url"]).aggregate([([], "count_all")]).to_pylist()
        pairs.update({(r["license"] or "", r["license_url"] or ""): r["count_all"] for r in counted})
    canonical: Counter[str] = Counter()
    unreadable = {}
    for (text, url), n in pairs.items():
        license_id, reason = licenses.resolve(text, url)
        canonical[license_id or "(unreadable)"] += n
        if license_id is None:
            unreadable[(text, url)] = reason
    return {"rows": rows, "refused": refused, "pairs": pairs, "canonical": canonical, "unreadable": unreadable}
