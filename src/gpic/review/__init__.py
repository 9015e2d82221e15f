"""Reviewing a run: verify (the files as a consumer sees them), audit (dropped images),
report (one HTML page), cost (measured and extrapolated), status (blocks done and pending)."""


def printable(text: object) -> str:
    """Text from source metadata as a terminal or a page may show it: control characters,
    bidi overrides and other invisible format characters escaped (\\x1b, \\u202e), so a
    title cannot rewrite the screen or reorder what a reviewer reads. JSON output keeps the
    text exactly."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
