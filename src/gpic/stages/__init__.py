"""The pipeline's stages, one module each, in pipeline order:

    partition -> fetch -> filter -> judge -> embed -> dedup -> caption -> pack -> provenance -> publish

Every stage module has the same surface: `STAGE` (its entry in the table below: name, the
results folder of its per-shard table, its outcome), `COLUMNS` (what its table holds) and one
entry point `run(files, cfg, *, model=None)`, where `files` is the shard's `ShardFiles` (or
the whole `Layout` for the corpus-wide stages: partition, dedup, publish), `cfg` the validated
config and `model` a model loaded once per block job. `run` reads its inputs from the layout
and calls the stage's pure core, which tests call directly.

Provenance does not know the stages by heart: it walks `PIPELINE` and asks each stage's
outcome what became of a key."""

from __future__ import annotations

import string
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """How a stage's table says what became of a key: the status column and its values that
    drop or fail the key, and the reason to record (a column, or a template over columns).
    With `ok` given, any status outside it ends the key as `otherwise`. A key the stage has
    no row for fails with `missing`. `status=None`: a row means the key passed."""

    status: str | None
    reason: str = ""
    drop: tuple = ()
    fail: tuple = ()
    ok: tuple | None = None
    otherwise: str = "failed"
    missing: str = ""

    @property
    def columns(self) -> list[str]:
        """The columns provenance reads from the stage's table."""
        fields = ([f for _, f, _, _ in string.Formatter().parse(self.reason) if f] if "{" in self.reason
                  else [self.reason])
        return list(dict.fromkeys(c for c in (self.status, *fields) if c))

    def verdict(self, row: dict) -> tuple[str, str] | None:
        """(state, reason) when the stage ended the key, None when it passed it on."""
        if self.status is None:
            return None
        value = row[self.status]
        if self.ok is not None:
            state = None if value in self.ok else self.otherwise
        else:
            state = "dropped" if value in self.drop else "failed" if value in self.fail else None
        if state is None:
            return None
        return state, self.reason.format(**row) if "{" in self.reason else row[self.reason]


@dataclass(frozen=True)
class Stage:
    name: str  # as provenance and lineage report it
    table: str | None  # results/<table>/{shard}.parquet, None where the stage writes no per-shard table
    scope: str  # "shard": one shard at a time; "corpus": reads across shards
    outcome: Outcome | None = None  # None: the stage decides nothing per key


PIPELINE: tuple[Stage, ...] = (
    Stage("partition", "manifests", "corpus",
          Outcome("contract_error", "contract_error", ok=("", None), otherwise="dropped")),
    Stage("fetch", "fetch", "shard",
          Outcome("fetch_status", "fetch_reason", drop=("dropped",), fail=("failed",), missing="no fetch record")),
    Stage("filter", "filter", "shard",
          Outcome("filter_verdict", "filter_reason", drop=("drop",), fail=("failed",), missing="no filter record")),
    Stage("judge", "judge", "shard",
          Outcome("judge_verdict", "judge_reason", drop=("drop",), fail=("failed",), missing="no judge record")),
    Stage("embed", "embed", "shard",
          Outcome("embed_status", "embed_reason", drop=("drop",), fail=("failed",), missing="no embed record")),
    Stage("dedup", "dedup", "corpus",
          Outcome("kept", "duplicate ({dedup_layer}): of {duplicate_of}, similarity {similarity:.3f}", drop=(False,),
                  missing="no dedup decision")),
    Stage("caption", "captions", "shard",
          Outcome("caption_status", "caption_reason", drop=("dropped",), fail=("failed",),
                  missing="no caption record")),
    Stage("pack", None, "shard", Outcome(None, missing="captioned but missing from the packed output")),
    Stage("provenance", "provenance", "shard"),
    Stage("publish", None, "corpus"),
)
STAGES = {stage.name: stage for stage in PIPELINE}
TABLES = [stage.table for stage in PIPELINE if stage.table and stage.outcome]  # per-shard evidence, in order
