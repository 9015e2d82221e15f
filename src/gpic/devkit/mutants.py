"""A small mutation check: plant one known bug at a time in a copy of the package, run the
tests that guard that promise, and report the bugs the suite misses.

Each mutant breaks one promise the README makes (the licence gate, conservation, the keep
policy, the loader's pixels, ...). The copy goes first on PYTHONPATH, so the tests, and the
`gpic` and Snakemake processes they start, import the mutated package while the checkout
stays untouched. Only fast tests run (`-m "not slow"`): a mutant that only a workflow test
would catch is reported as missed, which is worth knowing too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # the checkout: mutants run its tests


@dataclass(frozen=True)
class Mutant:
    name: str  # the promise it breaks
    path: str  # below src/gpic
    before: str  # must occur exactly once
    after: str
    tests: tuple[str, ...]  # below tests/


MUTANTS = (
    Mutant("dedup ranks pixels before split", "stages/dedup.py",
           "order = np.lexsort((keys.key, -keys.pixels, keys.split))",
           "order = np.lexsort((keys.key, keys.split, -keys.pixels))", ("stages/test_dedup.py",)),
    Mutant("dedup ranks validation before test", "stages/dedup.py", 'SPLIT_RANK = {"test": 0, "val": 1, "train": 2}',
           'SPLIT_RANK = {"test": 1, "val": 0, "train": 2}', ("stages/test_dedup.py",)),
    Mutant("dedup keeps train images linked only to removed test images", "stages/dedup.py",
           "status[down[test[up] & ~test[down]]] = REMOVED", "pass", ("stages/test_dedup.py",)),
    Mutant("dedup threshold loosened", "stages/dedup.py",
           'np.nextafter(np.float32(cfg["cosine_min"]), np.float32(-1))', 'cfg["cosine_min"] - 0.05',
           ("stages/test_dedup.py",)),
    Mutant("summary conserves by construction", "stages/provenance.py",
           'if not c["in"] == c["keys"] == c["rows"] ==', 'if not c["keys"] ==',
           ("stages/test_provenance.py",)),
    Mutant("a key captioned but not packed is reported packed", "stages/provenance.py",
           '    evidence["pack"] = packed\n', '    evidence["pack"] = {k: {} for k in evidence["partition"]}\n',
           ("stages/test_provenance.py",)),
    Mutant("keys without a fetch record are omitted", "stages/provenance.py",
           '    for key, m in evidence["partition"].items():\n',
           '    for key, m in [(k, v) for k, v in evidence["partition"].items() if k in evidence["fetch"]]:\n',
           ("stages/test_provenance.py",)),
    Mutant("verify checks only the count of provenance keys", "review/verify.py",
           "        if manifest.exists():", "        if False:", ("stages/test_provenance.py",)),
    Mutant("licence checked after downloading", "stages/fetch.py",
           '    verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)\n'
           '    record["license_id"]',
           '    with __import__("contextlib").suppress(Exception):\n        fetcher.fetch(row["url"])\n'
           '    verdict = licenses.check(row["license"], row["license_url"], row["attribution"], allow)\n'
           '    record["license_id"]', ("stages/test_fetch.py",)),
    Mutant("a rerun reuses a download the new allowlist refuses", "stages/fetch.py",
           "            if verdict.ok:\n                return record, ",
           "            if True:\n                return record, ", ("stages/test_fetch.py",)),
    Mutant("the licence URL overrules the text", "licenses.py", "    if text and url:\n", "    if False:\n",
           ("test_identity_and_licenses.py",)),
    Mutant("canonical ids do not read as themselves", "licenses.py", "NAMES |= {", "_ = {",
           ("test_identity_and_licenses.py",)),
    Mutant("fetch refuses only RFC 1918 and loopback", "http.py", "one.is_global and not one.is_multicast",
           "not one.is_private and not one.is_loopback and not one.is_multicast", ("stages/test_fetch.py",)),
    Mutant("X-Robots-Tag read from the first line only", "stages/fetch.py",
           'response.headers.getlist("X-Robots-Tag")', '[response.headers.get("X-Robots-Tag", "")]',
           ("stages/test_fetch.py",)),
    Mutant("body size cap not enforced while reading", "stages/fetch.py", "            if size > limit:\n",
           "            if False:\n", ("stages/test_fetch.py",)),
    Mutant("retrieved_at falls back to pack time", "stages/pack.py", 'row["retrieved_at"] or row["fetched_at"]',
           'row["retrieved_at"] or __import__("datetime").datetime.now().isoformat()', ("stages/test_pack.py",)),
    Mutant("indexes written without their fixed schema", "stages/pack.py",
           'write_table(index.sort_values("key"), index_path, INDEX_SCHEMA)',
           'write_table(index.sort_values("key"), index_path)', ("stages/test_pack.py",)),
    Mutant("loader ignores EXIF orientation on the fast path", "loader.py", "        turn = head.orientation\n",
           "        turn = 1\n", ("test_loader.py",)),
    Mutant("loader does not flatten transparency", "loader.py", "        image = normalise(image)\n",
           '        image = image.convert("RGB")\n', ("test_loader.py",)),
    Mutant("human output not escaped", "review/__init__.py", "    if text.isprintable():\n", "    if True:\n",
           ("review/test_human_output.py",)),
    Mutant("a judge whose scores miss its answer words passes in silence", "stages/judge.py",
           "    if low / judged > WARN_FRACTION:\n", "    if False:\n", ("stages/test_judge_health.py",)),
    Mutant("caption levels encode the image once per level", "inference/vlm.py",
           "        prefix = self._encode_prefix(images)\n        out = {}\n",
           "        return {level: self.generate(images, p, n) for level, (p, n) in levels.items()}\n",
           ("inference/test_models.py",)),
    Mutant("the judge reads its words' probabilities without the image's rotary offsets", "inference/vlm.py",
           "(positions + prefix.rope_deltas.repeat_interleave(c, dim=0))[None]", "positions[None]",
           ("inference/test_models.py",)),
    Mutant("the copy detector batches equal shapes only", "inference/copy_detector.py",
           "        return self._descriptors(batch).astype(np.float16)\n",
           "        return self.describe_per_image(images)\n", ("inference/test_models.py",)),
    Mutant("bench filter's baseline is our reduced decode", "bench/filter.py",
           '"baseline": lambda d: assess(d, cfg, reduced=False)', '"baseline": lambda d: assess(d, cfg)',
           ("stages/test_filter.py",)),
    Mutant("verify misses a key packed twice", "review/verify.py",
           "    same = keys[1:] == keys[:-1]\n", "    same = keys[1:] != keys[1:]\n", ("stages/test_provenance.py",)),
)


def plant(mutant: Mutant, package: Path, dry_run: bool = False) -> None:
    """Apply one mutant to the package copy at `package`; refuse one whose code has moved."""
    path = package / mutant.path
    text = path.read_text()
    if text.count(mutant.before) != 1:
        raise ValueError(f"mutant {mutant.name!r}: its code occurs {text.count(mutant.before)} times in "
                         f"{mutant.path}; update gpic.devkit.mutants")
    if not dry_run:
        path.write_text(text.replace(mutant.before, mutant.after))


def run_mutant(mutant: Mutant, python: str = sys.executable, timeout: float = 900) -> dict:
    """Run the mutant's tests against a mutated copy of the package: caught when they fail."""
    with tempfile.TemporaryDirectory(prefix="gpic-mutant-") as tmp:
        copy = Path(tmp) / "src" / "gpic"
        shutil.copytree(REPO / "src" / "gpic", copy, ignore=shutil.ignore_patterns("__pycache__"))
        plant(mutant, copy)
        env = {**os.environ, "PYTHONPATH": f"{copy.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        command = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow",
                   *(str(REPO / "tests" / t) for t in mutant.tests)]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
            outcomes = {0: "missed", 1: "caught"}
            outcome = outcomes.get(done.returncode, f"error {done.returncode}")
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        except subprocess.TimeoutExpired:
            outcome, tail = "timeout", [""]
        return {"mutant": mutant.name, "outcome": outcome, "seconds": round(time.perf_counter() - started, 1),
                "tests": ",".join(mutant.tests), "last_line": tail[0][:160]}


def main() -> int:
    """`make mutants`: every mutant in turn, a table of outcomes, exit 1 when any is missed."""
    for mutant in MUTANTS:  # every mutant still applies, before minutes of tests
        plant(mutant, REPO / "src" / "gpic", dry_run=True)
    results = []
    for mutant in MUTANTS:
        result = run_mutant(mutant)
        results.append(result)
        print(f"{result['outcome']:>8}  {result['seconds']:6.1f} s  {result['mutant']}  ({result['tests']})",
              flush=True)
    missed = [r["mutant"] for r in results if r["outcome"] != "caught"]
    print(f"mutants={len(results)} caught={len(results) - len(missed)} missed={len(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
