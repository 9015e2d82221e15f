"""Human output shows hostile source metadata escaped (terminal escapes, bidi overrides,
rich markup); JSON output keeps it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from gpic.cli import app
from gpic.identity import make_key
from gpic.review import printable
from gpic.store import write_json, write_table

# A title that would clear the screen, turn the terminal red and reverse what follows it.
HOSTILE = "Sunset\x1b[2J\x1b[31m over \u202egpj.exe\u202c [bold]bay[/bold]\u200b\n(2019)"


def test_printable_escapes_control_and_format_characters_only():
    assert printable("Café – 東京 🌅") == "Café – 東京 🌅"
    shown = printable(HOSTILE)
    assert shown == "Sunset\\x1b[2J\\x1b[31m over \\u202egpj.exe\\u202c [bold]bay[/bold]\\u200b\\n(2019)"
    assert shown.isprintable()


def results_with_a_hostile_row(root: Path) -> tuple[Path, str]:
    """A one-shard results folder whose only key carries HOSTILE as title and licence text."""
    key = make_key("flickr", "42")
    manifest = pd.DataFrame([{"key": key, "source": "flickr", "source_id": "42", "url": "https://example.org/a.jpg",
                              "license": HOSTILE, "license_url": "", "attribution": "x", "title": HOSTILE,
                              "split": "train", "contract_error": ""}])
    write_table(manifest, root / "manifests" / "00000.parquet")
    write_json({"shards": 1, "per_shard": {"00000": 1}}, root / "manifests" / "partition.json")
    write_table(pd.DataFrame([{"key": key, "state": "dropped", "stage": "fetch",
                               "reason": f"licence unrecognised: {HOSTILE}", "tar": "", "member": "",
                               "source": "flickr", "source_id": "42", "url": "https://example.org/a.jpg"}]),
                root / "provenance" / "00000.parquet")
    return root, key


def test_lineage_and_dropped_escape_metadata_and_json_keeps_it(tmp_path):
    results, key = results_with_a_hostile_row(tmp_path / "results")
    runner = CliRunner()
    human = runner.invoke(app, ["lineage", key, "--results", str(results)], terminal_width=400)
    assert human.exit_code == 0, human.output
    assert "\x1b[2J" not in human.output and "\u202e" not in human.output and "\u200b" not in human.output
    assert "\\x1b[2J\\x1b[31m over \\u202egpj.exe" in human.output
    assert "[bold]bay[/bold]" in human.output  # shown as text, not taken as rich markup
    exact = runner.invoke(app, ["lineage", key, "--results", str(results), "--json"])
    assert json.loads(exact.output)["manifests"]["title"] == HOSTILE
    listed = runner.invoke(app, ["dropped", "--results", str(results)])
    assert listed.exit_code == 0 and "\x1b" not in listed.output and "\u202e" not in listed.output
    assert f"{key}\t00000\tfetch\tlicence unrecognised: Sunset\\x1b[2J" in listed.output
