"""Logging: a workflow job's into its rule's log file, a long command's progress onto the terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def to_log(path: str | Path) -> None:
    """Send stderr and the `gpic` loggers to the rule's log file (Snakemake's `log:`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115  (stderr for the rest of the job)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, force=True, format=FORMAT)


@contextmanager
def progress(stream=None) -> Iterator[None]:
    """The `gpic` loggers' INFO lines on the terminal while a long command (`gpic collect`) runs,
    and nothing left behind after it: a command run in-process (tests, a notebook) must not
    change the logging of whatever runs next."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("gpic")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
