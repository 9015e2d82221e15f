"""Human review of dropped images: list them by reason from the provenance tables and draw a
contact sheet from the raw bytes, which stay in results/raw/{shard}.tar (nothing is deleted),
so a reviewer can check that a reason drops what it claims before a policy change."""

from __future__ import annotations

import tarfile
import textwrap
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from gpic.images import load_rgb
from gpic.layout import Layout
from gpic.review import printable
from gpic.store import read_table

CELL = 192  # thumbnail box, pixels
TEXT_LINES = 4  # key plus up to three lines of reason under each thumbnail
LINE = 12


def dropped(results: str | Path, reason: str = "", shard: str | None = None) -> pd.DataFrame:
    """Dropped keys (key, shard, stage, reason) whose reason contains `reason` (any case)."""
    paths = sorted(Layout(Path(results)).tables("provenance").glob(f"{shard or '*'}.parquet"))
    if not paths:
        raise FileNotFoundError(f"no provenance tables for shard {shard or '*'} in {results}")
    frames = []
    for path in paths:  # filtered shard by shard: only the dropped rows (~8% of keys) are ever held together
        table = read_table(path, columns=["key", "state", "stage", "reason"])
        hits = table[(table["state"] == "dropped") & table["reason"].str.contains(reason, case=False, regex=False)]
        frames.append(hits.assign(shard=path.stem)[["key", "shard", "stage", "reason"]])
    return pd.concat(frames, ignore_index=True).sort_values(["shard", "key"]).reset_index(drop=True)


def raw_bytes(results: Path, shard: str, keys: list[str]) -> dict[str, bytes]:
    """The raw bytes of `keys` from the shard's raw tar (only those members are read)."""
    layout = Layout(Path(results))
    fetch = read_table(layout.table("fetch", shard), columns=["key", "raw_member"])
    wanted = set(keys)
    members = {m: k for k, m in fetch.itertuples(index=False) if k in wanted and m}
    out = {}
    with tarfile.open(layout.raw(shard)) as tar:
        for info in tar:
            if info.name in members:
                out[members[info.name]] = tar.extractfile(info).read()
    return out


def thumbnail(data: bytes | None) -> Image.Image:
    """The image shrunk into the cell, or a grey tile saying why there is none."""
    tile = Image.new("RGB", (CELL, CELL), (96, 96, 96))
    if data is None:
        ImageDraw.Draw(tile).text((8, CELL // 2), "no bytes (not fetched)", fill="white")
        return tile
    try:
        image = load_rgb(data, max_side=CELL)
    except Exception as exc:  # the drop reason is often exactly this
        ImageDraw.Draw(tile).text((8, CELL // 2), f"cannot decode: {type(exc).__name__}", fill="white")
        return tile
    tile.paste(image, ((CELL - image.width) // 2, (CELL - image.height) // 2))
    return tile


def contact_sheet(rows: pd.DataFrame, results: str | Path, out: str | Path, columns: int = 6) -> Path:
    """A grid of thumbnails with key and reason drawn under each; saved by `out`'s extension."""
    results, out = Path(results), Path(out)
    data: dict[str, bytes] = {}
    for shard, group in rows.groupby("shard"):
        data.update(raw_bytes(results, shard, group["key"].tolist()))
    height = CELL + TEXT_LINES * LINE + 8
    n_rows = max(1, -(-len(rows) // columns))
    sheet = Image.new("RGB", (columns * CELL, n_rows * height), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, row in enumerate(rows.itertuples()):
        x, y = (i % columns) * CELL, (i // columns) * height
        sheet.paste(thumbnail(data.get(row.key)), (x, y))
        lines = [row.key, *textwrap.wrap(printable(f"{row.stage}: {row.reason}"), width=CELL // 6)[: TEXT_LINES - 1]]
        for j, line in enumerate(lines):
            draw.text((x + 4, y + CELL + 2 + j * LINE), line, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
