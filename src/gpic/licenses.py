"""Licence gate: map the licence strings and URLs that Flickr and Wikimedia Commons give to
canonical ids (SPDX where one exists) and decide against the configured allowlist."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

# Flickr's licence names (flickr.photos.licenses.getInfo) and common free-text forms.
NAMES = {
    "attribution license": "CC-BY-2.0",
    "attribution-sharealike license": "CC-BY-SA-2.0",
    "attribution-noderivs license": "CC-BY-ND-2.0",
    "attribution-noncommercial license": "CC-BY-NC-2.0",
    "attribution-noncommercial-sharealike license": "CC-BY-NC-SA-2.0",
    "attribution-noncommercial-noderivs license": "CC-BY-NC-ND-2.0",
    "no known copyright restrictions": "public-domain",
    "no restrictions": "public-domain",  # Commons' {{No restrictions}} (Flickr Commons)
    "united states government work": "public-domain",
    "public domain dedication (cc0)": "CC0-1.0",
    "public domain mark": "PDM-1.0",
    "public domain": "public-domain",
    "cc0": "CC0-1.0",
    "cc-zero": "CC0-1.0",
    "pdm": "PDM-1.0",
}
CC_TEXT = re.compile(r"^cc[ -]?(by(?:[ -](?:nc|nd|sa))*)[ -]?(\d\.\d)?")
CC_URL = re.compile(r"creativecommons\.org/licenses/(by(?:-(?:nc|nd|sa))*)/(\d\.\d)")
CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/(\d\.\d)")
PDM_URL = re.compile(r"creativecommons\.org/publicdomain/mark/(\d\.\d)")
COMMONS_PD_URL = re.compile(r"commons\.wikimedia\.org/wiki/template:(pd-|no_restrictions)")
NEEDS_ATTRIBUTION = re.compile(r"^CC-BY")


def canonical(license_text: str, license_url: str = "") -> str | None:
    """Canonical id of a licence, or None when it is not recognised."""
    url = license_url.strip().lower()
    if m := CC_URL.search(url):
        return f"CC-{m.group(1).upper()}-{m.group(2)}"
    if m := CC0_URL.search(url):
        return f"CC0-{m.group(1)}"
    if m := PDM_URL.search(url):
        return f"PDM-{m.group(1)}"
    if COMMONS_PD_URL.search(url):
        return "public-domain"
    text = " ".join(license_text.strip().lower().split())
    if text in NAMES:
        return NAMES[text]
    if text.startswith("pd-") or text.startswith("pd "):  # Commons templates: PD-US, PD-old, ...
        return "public-domain"
    if m := CC_TEXT.match(text.replace("_", " ")):
        parts = re.split(r"[ -]", m.group(1).upper())
        version = m.group(2) or "4.0"
        return "CC-" + "-".join(parts) + f"-{version}"
    return None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    license_id: str  # canonical id, '' when unrecognised
    reason: str  # '' when ok


def check(license_text: str, license_url: str, attribution: str, allow: list[str]) -> Verdict:
    """Is this record's licence on the allowlist, with attribution where the licence needs it?"""
    license_id = canonical(license_text, license_url)
    shown = (license_text or license_url or "(empty)")[:120]
    if license_id is None:
        return Verdict(False, "", f"licence unrecognised: {shown}")
    if not any(fnmatchcase(license_id, pattern) for pattern in allow):
        return Verdict(False, license_id, f"licence not allowed: {license_id} ({shown})")
    if NEEDS_ATTRIBUTION.match(license_id) and not attribution.strip():
        return Verdict(False, license_id, f"licence attribution missing: required by {license_id}")
    return Verdict(True, license_id, "")
