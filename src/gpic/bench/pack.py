"""`gpic bench pack`: our pack against a plain tarfile copy of the same samples."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from gpic.bench import best_of, synthetic_shard
from gpic.stages.pack import pack
from gpic.store import read_tar


def bench_pack(n: int = 500, repeat: int = 3) -> dict[str, float | int]:
    """MB/s of our pack (joins, records, offsets, index) against copying the same images and
    the JSON records into a tar with the standard library."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = synthetic_shard(tmp / "shard", n)
        def clean() -> None:  # replacing an existing 30 MB file costs more than writing it
            for name in ("ours.tar", "ours.parquet", "plain.tar"):
                (tmp / name).unlink(missing_ok=True)

        ours_s = best_of(lambda: pack([inputs], "train", "full", tmp / "ours.tar", tmp / "ours.parquet"), repeat, clean)
        members = read_tar(tmp / "ours.tar")

        def plain_copy() -> None:
            with tarfile.open(inputs.raw) as raw, tarfile.open(tmp / "plain.tar", "w") as out:
                for info in raw:
                    out.addfile(info, raw.extractfile(info))
                    record = members[info.name.replace(".jpg", ".json")]
                    meta = tarfile.TarInfo(info.name.replace(".jpg", ".json"))
                    meta.size = len(record)
                    out.addfile(meta, io.BytesIO(record))

        baseline_s = best_of(plain_copy, repeat, clean)
        megabytes = sum(len(data) for data in members.values()) / 1e6
    return {"samples": n, "mb": round(megabytes, 1), "ours_mb_per_s": megabytes / ours_s,
            "baseline_mb_per_s": megabytes / baseline_s, "ours_s": ours_s, "baseline_s": baseline_s,
            "ratio": baseline_s / ours_s}
