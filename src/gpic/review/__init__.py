"""Reviewing a run: verify (the files as a consumer sees them), audit (dropped images),
report (one HTML page), cost (measured and extrapolated), status (blocks done and pending)."""
