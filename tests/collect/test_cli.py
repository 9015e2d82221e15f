"""`gpic collect` by hand: list the parts, collect them, name the parts that failed."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from gpic.cli import app

from commons_dumps import author, entity, image, stmt, write_images, write_mediainfo

MODELS = {stage: {"model": "m"} for stage in ("judge", "embed", "caption", "eval")}


def workspace(tmp_path: Path, lines: list[dict]) -> Path:
    write_mediainfo(tmp_path / "mediainfo.json", lines)
    write_images(tmp_path / "image.sql", [image(f"P_{n}.jpg", 800, 600) for n in range(len(lines))])
    config = {"shards": 1, **MODELS, "collect": {
        "collectors": ["commons-dump"], "user_agent": "gpic-test/0 (test@example.org)",
        "commons_dump": {"mediainfo": str(tmp_path / "mediainfo.json"), "images": str(tmp_path / "image.sql"),
                         "chunks": 2}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "c.yaml"


def gpic(*args) -> tuple[int, str]:
    run = CliRunner().invoke(app, [str(a) for a in args])
    return run.exit_code, run.output


def test_gpic_collect_lists_and_collects_the_parts(tmp_path):
    files = [entity(10 + n, f"File:P {n}.jpg", stmt("P6216", "Q50423863"), stmt("P275", "Q20007257"),
                    author("Ann")) for n in range(4)]
    config, out = workspace(tmp_path, files), tmp_path / "out"
    code, shown = gpic("collect", "commons-dump", "--config", config, "--out", out, "--list")
    assert code == 0 and shown.split() == ["chunk-00000-of-00002", "pending", "chunk-00001-of-00002", "pending"]
    code, shown = gpic("collect", "commons-dump", "--config", config, "--out", out)
    assert code == 0 and "commons-dump: 4 rows in 2 parts" in shown
    assert sum(pq.read_metadata(p).num_rows for p in out.glob("chunk-*.parquet")) == 4
    code, shown = gpic("collect", "commons-dump", "--config", config, "--out", out, "--list")
    assert shown.split().count("finished") == 2


def test_gpic_collect_names_a_failed_part_and_a_bad_collector(tmp_path):
    files = [entity(10, "File:P 0.jpg", stmt("P275", "Q20007257"), author("Ann")), {"not": "an entity"}]
    config = workspace(tmp_path, files)
    code, shown = gpic("collect", "commons-dump", "--config", config, "--out", tmp_path / "out")
    assert code == 1 and "1 of 2 parts failed (first: chunk-00001-of-00002" in " ".join(shown.split())
    code, shown = gpic("collect", "flickr", "--config", config)
    assert code == 2 and "collect.flickr is missing" in shown
    code, shown = gpic("collect", "nope", "--config", config)
    assert code == 2 and "unknown collector 'nope'" in shown


def test_gpic_collect_leaves_logging_as_it_found_it(tmp_path):
    """Its progress lines go to the terminal while it runs; afterwards an in-process caller's
    logging (the next command, a notebook) is as before."""
    import logging

    files = [entity(10, "File:P 0.jpg", stmt("P6216", "Q50423863"), stmt("P275", "Q20007257"), author("Ann"))]
    logger = logging.getLogger("gpic")
    handlers, level = list(logger.handlers), logger.level
    code, shown = gpic("collect", "commons-dump", "--config", workspace(tmp_path, files), "--out", tmp_path / "out")
    assert code == 0 and "INFO gpic.collect: commons-dump part 1/2" in shown
    assert (logger.handlers, logger.level) == (handlers, level)
