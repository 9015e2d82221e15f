"""Licence gate: map the licence strings and URLs that Flickr and Wikimedia Commons give to
canonical ids (SPDX where one exists) and decide against the configured allowlist.

Canonical ids: SPDX for Creative Commons (`CC-BY-4.0`, `CC-BY-SA-3.0-DE` for a ported
licence, `CC0-1.0`) and GFDL; `PDM-1.0` for the Public Domain Mark, `public-domain` for other
public-domain statements (Flickr "No known copyright restrictions", US Government Work,
Commons' PD-* templates), `all-rights-reserved`. Anything else is unrecognised."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

# Flickr's licence ids (flickr.photos.licenses.getInfo): the API gives the number.
FLICKR_IDS = {
    "0": "all-rights-reserved",
    "1": "CC-BY-NC-SA-2.0",
    "2": "CC-BY-NC-2.0",
    "3": "CC-BY-NC-ND-2.0",
    "4": "CC-BY-2.0",
    "5": "CC-BY-SA-2.0",
    "6": "CC-BY-ND-2.0",
    "7": "public-domain",  # No known copyright restrictions (Flickr Commons)
    "8": "public-domain",  # United States Government Work
    "9": "CC0-1.0",
    "10": "PDM-1.0",
    "11": "CC-BY-4.0",
    "12": "CC-BY-SA-4.0",
    "13": "CC-BY-ND-4.0",
    "14": "CC-BY-NC-4.0",
    "15": "CC-BY-NC-SA-4.0",
    "16": "CC-BY-NC-ND-4.0",
}
# Flickr's licence names and the free-text forms Commons' LicenseShortName uses.
NAMES = {
    "all rights reserved": "all-rights-reserved",
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
    "cc0 1.0": "CC0-1.0",
    "pdm": "PDM-1.0",
    "cc pdm 1.0": "PDM-1.0",
    "gfdl": "GFDL-1.2-or-later",  # Commons' {{GFDL}}: version 1.2 or any later
}
CC_TEXT = re.compile(r"^cc[ -]?(by(?:[ -](?:nc|nd|sa))*)(?:[ -](\d\.\d))?(?:[ -]([a-z]{2}))?(?:[ -]migrated)?$")
ATTRIBUTION_TEXT = re.compile(r"^attribution(?:-(noncommercial|sharealike|noderivs))*[ -](\d\.\d)(?: international)?$")
CC_URL = re.compile(r"creativecommons\.org/licenses/(by(?:-(?:nc|nd|sa))*)/(\d\.\d)(?:/([a-z]{2})(?=/|$))?")
CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/(\d\.\d)")
PDM_URL = re.compile(r"creativecommons\.org/publicdomain/mark/(\d\.\d)")
COMMONS_PD_URL = re.compile(r"commons\.wikimedia\.org/wiki/template:(pd-|no_restrictions)")
FLICKR_URL = re.compile(r"flickr\.com/commons/usage|usa\.gov/government-works")
GFDL_URL = re.compile(r"gnu\.org/(?:licenses|copyleft)/fdl")
NEEDS_ATTRIBUTION = re.compile(r"^CC-BY")
ELEMENTS = {"noncommercial": "NC", "sharealike": "SA", "noderivs": "ND"}


def _cc(elements: str, version: str, port: str | None) -> str:
    parts = re.split(r"[ -]", elements.upper())
    return "-".join(["CC", *parts, version] + ([port.upper()] if port else []))


def canonical(license_text: str, license_url: str = "") -> str | None:
    """Canonical id of a licence, or None when it is not recognised. The URL, when it names
    a licence, decides: it is less ambiguous than the free text."""
    url = license_url.strip().lower()
    if m := CC_URL.search(url):
        return _cc(m.group(1), m.group(2), m.group(3))
    if m := CC0_URL.search(url):
        return f"CC0-{m.group(1)}"
    if m := PDM_URL.search(url):
        return f"PDM-{m.group(1)}"
    if COMMONS_PD_URL.search(url) or FLICKR_URL.search(url):
        return "public-domain"
    if GFDL_URL.search(url):
        return "GFDL-1.2-or-later"
    text = " ".join(license_text.strip().lower().replace("_", " ").split())
    if text in FLICKR_IDS:
        return FLICKR_IDS[text]
    if text in NAMES:
        return NAMES[text]
    if text.startswith(("pd-", "pd ")):  # Commons templates: PD-US, PD-old-70, PD-self, ...
        return "public-domain"
    if m := CC_TEXT.match(text):
        return _cc(m.group(1), m.group(2) or "4.0", m.group(3))
    if m := ATTRIBUTION_TEXT.match(text):  # Flickr's 4.0 names: "Attribution-ShareAlike 4.0 International"
        elements = [ELEMENTS[e] for e in re.findall(r"-(noncommercial|sharealike|noderivs)", text)]
        return "-".join(["CC", "BY", *elements, m.group(2)])
    return None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    license_id: str  # canonical id, '' when unrecognised
    reason: str  # '' when ok


def check(license_text: str, license_url: str, attribution: str, allow: list[str]) -> Verdict:
    """Is this record's licence on the allowlist, with attribution where the licence needs it?
    Reasons keep the raw licence string, so a drop can be audited against the source."""
    license_id = canonical(license_text, license_url)
    shown = (license_text or license_url or "(empty)")[:120]
    if license_id is None:
        return Verdict(False, "", f"licence unrecognised: {shown}")
    if not any(fnmatchcase(license_id, pattern) for pattern in allow):
        return Verdict(False, license_id, f"licence not allowed: {license_id} ({shown})")
    if NEEDS_ATTRIBUTION.match(license_id) and not attribution.strip():
        return Verdict(False, license_id, f"licence attribution missing: required by {license_id}")
    return Verdict(True, license_id, "")
