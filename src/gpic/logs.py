"""Logging for workflow scripts: everything a job prints goes to its rule's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def to_log(path: str | Path) -> None:
    """Send stderr and the `gpic` loggers to the rule's log file (Snakemake's `log:`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115  (stderr for the rest of the job)
    sys.stderr = stream
    to_stream(stream)


def to_stream(stream=sys.stderr) -> None:
    """Progress of a long command (`gpic collect`) on the terminal, in the same format."""
    logging.basicConfig(stream=stream, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
