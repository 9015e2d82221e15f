"""Licence gate: map the licence strings and URLs that Flickr and Wikimedia Commons give to
canonical ids (SPDX where one exists) and decide against the configured allowlist.

Canonical ids: SPDX for Creative Commons (`CC-BY-4.0`, `CC-BY-SA-3.0-DE` for a ported
licence, `CC0-1.0`), the GFDL and the Free Art License (`LAL-1.3`); `PDM-1.0` for the Public
Domain Mark, `public-domain` for other public-domain statements (Flickr "No known copyright
restrictions", US Government Work, Commons' PD-* templates), `all-rights-reserved`. Anything else
is unrecognised."""

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
    "public domain mark 1.0": "PDM-1.0",  # Flickr's newer name for id 10
    "public domain dedication (cc0 1.0)": "CC0-1.0",
    "creative commons zero, public domain dedication": "CC0-1.0",  # Commons' UsageTerms for CC0
    "public domain": "public-domain",
    "pd": "public-domain",  # Commons' {{PD}}-style short names
    "pdm-owner": "PDM-1.0",  # Commons' {{PDM-owner}}: the PD Mark applied by the copyright holder
    "cc0": "CC0-1.0",
    "cc 0": "CC0-1.0",
    "cc-zero": "CC0-1.0",
    "cc0 1.0": "CC0-1.0",
    "pdm": "PDM-1.0",
    "cc pdm 1.0": "PDM-1.0",
    "gfdl": "GFDL-1.2-or-later",  # Commons' {{GFDL}}: version 1.2 or any later
    "gnu free documentation license": "GFDL-1.2-or-later",  # its UsageTerms
    "gfdl 1.3": "GFDL-1.3-or-later",  # Commons' {{GFDL-1.3}}: version 1.3 or any later
    "gnu free documentation license 1.3": "GFDL-1.3-or-later",
    "creative commons zero": "CC0-1.0",
    "public domain mark owner": "PDM-1.0",  # {{PDM-owner}}'s UsageTerms ("Creative Commons ..." cut as noise)
    "fal": "LAL-1.3",  # the Free Art License (Licence Art Libre), Commons' {{FAL}}
    "free art license": "LAL-1.3",
    "fair use": "all-rights-reserved",  # a non-free file used under fair use (local files of Wikipedias)
}
# Wikidata items that Commons' structured data names as a file's licence (P275) or copyright
# status (P6216), as canonical ids. Each id was checked against Wikimedia's own list of licence
# items for Commons search (operations-mediawiki-config, $wgWBCSLicenseMapping, T257938) and at
# least one tool that writes or reads these statements (multichill's own-work SDC bot, Flickypedia,
# ContentMine's NCBI2wikidata); an item not found in two such sources is left out and stays
# unrecognised. Unversioned items ("CC BY", Q6905323) are left out: the version is the licence.
WIKIDATA_ITEMS = {
    # public domain: waivers, marks and statements
    "Q6938433": "CC0-1.0",
    "Q7257361": "PDM-1.0",
    "Q19652": "public-domain",  # public domain (mostly a P6216 status)
    "Q98592850": "public-domain",  # released into the public domain by the copyright holder
    # Creative Commons Attribution, generic and ported
    "Q30942811": "CC-BY-1.0",
    "Q19125117": "CC-BY-2.0",
    "Q75470422": "CC-BY-2.0-FR",
    "Q44282633": "CC-BY-2.0-KR",
    "Q26116436": "CC-BY-2.1-JP",
    "Q18810333": "CC-BY-2.5",
    "Q27940776": "CC-BY-2.5-SE",
    "Q14947546": "CC-BY-3.0",
    "Q52555753": "CC-BY-3.0-AU",
    "Q53859967": "CC-BY-3.0-NL",
    "Q18810143": "CC-BY-3.0-US",
    "Q20007257": "CC-BY-4.0",
    # Creative Commons Attribution-ShareAlike, generic and ported
    "Q47001652": "CC-BY-SA-1.0",
    "Q19068220": "CC-BY-SA-2.0",
    "Q77355872": "CC-BY-SA-2.0-FR",
    "Q44282641": "CC-BY-SA-2.0-KR",
    "Q19113751": "CC-BY-SA-2.5",
    "Q24331618": "CC-BY-SA-2.5-CA",
    "Q18199175": "CC-BY-SA-2.5-NL",
    "Q15914252": "CC-BY-SA-2.5-SE",
    "Q14946043": "CC-BY-SA-3.0",
    "Q80837139": "CC-BY-SA-3.0-AT",
    "Q86239208": "CC-BY-SA-3.0-AU",
    "Q42716613": "CC-BY-SA-3.0-DE",
    "Q86239559": "CC-BY-SA-3.0-EE",
    "Q86239991": "CC-BY-SA-3.0-ES",
    "Q86240326": "CC-BY-SA-3.0-FR",
    "Q86240624": "CC-BY-SA-3.0-LU",
    "Q18195572": "CC-BY-SA-3.0-NL",
    "Q80837607": "CC-BY-SA-3.0-PL",
    "Q86241082": "CC-BY-SA-3.0-RO",
    "Q18810341": "CC-BY-SA-3.0-US",
    "Q18199165": "CC-BY-SA-4.0",
    # the GFDL as Commons' {{GFDL}} gives it: version 1.2 or any later
    "Q50829104": "GFDL-1.2-or-later",
    # non-commercial and no-derivatives licences: recognised so that they are refused by name
    "Q47008926": "CC-BY-NC-ND-1.0",
    "Q18810331": "CC-BY-NC-3.0",
    "Q15643954": "CC-BY-NC-SA-3.0",
    "Q19125045": "CC-BY-NC-ND-3.0",
    "Q34179348": "CC-BY-NC-4.0",
    "Q42553662": "CC-BY-NC-SA-4.0",
    "Q24082749": "CC-BY-NC-ND-4.0",
    "Q36795408": "CC-BY-ND-4.0",
}
WIKIDATA_ITEM = re.compile(r"^q[1-9][0-9]*$")
# Every canonical id reads as itself (a manifest written with SPDX ids, ours or another tool's).
NAMES |= {license_id.lower(): license_id for license_id in (*FLICKR_IDS.values(), *NAMES.values())
          if not license_id.startswith("CC-BY")}
# A port is two letters, or "igo" (3.0 IGO, for intergovernmental organisations). Commons'
# multi-version templates ("CC BY-SA 3.0,2.5,2.0,1.0", on older pages "CC-BY-SA-3.0-2.5-2.0-1.0")
# offer every version listed: the first, the newest, is the one read.
CC_TEXT = re.compile(r"^cc[ -]?(by(?:[ -](?:nc|nd|sa))*)(?:[ -](\d\.\d)(?: ?[,/-] ?\d\.\d)*)?(?:[ /-]([a-z]{2}|igo))?"
                     r"(?:[ -]migrated)?$")
# Flickr's and CC's long names: "Attribution-ShareAlike 4.0", "Attribution NonCommercial ShareAlike 4.0",
# "Attribution-Share Alike 3.0 de" (a port after the version, as Commons prints ported licences).
# A long name may leave the version out when it names an element ("Attribution-ShareAlike"):
# the URL beside it gives the version. "Attribution" alone is Commons' {{Attribution}}, another
# licence, and not read here.
ATTRIBUTION_TEXT = re.compile(r"^attribution((?:[ -](?:noncommercial|sharealike|noderivs))*)"
                              r"(?:[ -](\d\.\d)(?:-\d\.\d)*)?(?:[ -]([a-z]{2}|igo))?$")
CC_URL = re.compile(r"creativecommons\.org/licenses/(by(?:-(?:nc|nd|sa))*)/(\d\.\d)(?:/([a-z]{2}|igo)(?=/|$))?")
CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/(\d\.\d)")
PDM_URL = re.compile(r"creativecommons\.org/publicdomain/mark/(\d\.\d)")
COMMONS_PD_URL = re.compile(r"commons\.wikimedia\.org/wiki/template:(pd-|no_restrictions)")
# Flickr's pages for "No known copyright restrictions" and "United States Government Work" (the
# latter's URL was http://www.usa.gov/copyright.shtml until 2024, then usa.gov/government-copyright).
FLICKR_URL = re.compile(r"flickr\.com/commons/usage|usa\.gov/(government-works|government-copyright|copyright)")
# Flickr's id 0 ("All Rights Reserved") points at a help page on using other members' photos.
RESERVED_URL = re.compile(r"flickrhelp\.com/hc/[^/]+/articles/\d+-using-flickr-images-shared-by-other-members")
GFDL_URL = re.compile(r"gnu\.org/(?:licenses|copyleft)/fdl(-1\.3)?")
LAL_URL = re.compile(r"artlibre\.org/licence/lal")
# A wiki's page of the file itself (what Wikimedia's APIs give as the licence URL of a file
# without one): it names no licence, so the text alone decides.
FILE_PAGE_URL = re.compile(r"^(?:https?:)?//[a-z.-]+\.(?:wikipedia|wikimedia)\.org/wiki/[^/:]+:[^/]+"
                           r"\.(?:jpe?g|png|gif|svg|tiff?|webp)$")
NEEDS_ATTRIBUTION = re.compile(r"^CC-BY")
# What Commons prints where its Artist or Credit field names nobody: {{Unknown|author}},
# {{Anonymous}}, {{Author missing}}, the {{Information}} banner for an empty author, "Own work"
# alone (the source, not a name), and the same said in words or in other languages. Such a
# statement is not an author: a licence that requires attribution cannot be honoured with it.
_NOBODY = (r"(?:an? )?(?:unknown|anonymous|unidentified|uncredited|not known|unbekannte?r?|inconnue?|desconocido|"
           r"sconosciuto|onbekend|nieznany)")
_ROLE = (r"(?:author|artist|photographer|creator|painter|illustrator|engraver|sculptor|architect|fotograf|"
         r"photographe|fotógrafo|autor|auteur|autore|urheber|maker)")
NO_AUTHOR = re.compile(rf"^(?:{_NOBODY}(?: {_ROLE})?|{_ROLE}(?: is)? (?:unknown|missing|not known|not given|"
                       rf"not provided|unbekannt|inconnu|desconocido|sconosciuto)|{_ROLE} missing|"
                       rf"this file is lacking author information|no author(?: given| provided)?|own work|"
                       rf"none|n/?a|-+|\?+)$")
ELEMENTS = {"noncommercial": "NC", "sharealike": "SA", "noderivs": "ND"}
# Spellings of the licence elements in long names, and the words around a name that say nothing.
# Spellings of the licence elements in long names (also the German ones de.wikipedia and Commons
# print: "Namensnennung-Weitergabe unter gleichen Bedingungen 3.0 Deutschland"), and CC0's.
SPELLINGS = [(re.compile(r"share[ -]alike|weitergabe unter gleichen bedingungen"), "sharealike"),
             (re.compile(r"non[ -]commercial|nicht[ -]kommerziell"), "noncommercial"),
             (re.compile(r"no[ -]?deriv(?:ative)?s|keine bearbeitungen?"), "noderivs"),
             (re.compile(r"\bnamensnennung\b"), "attribution"), (re.compile(r" deutschland$"), " de"),
             (re.compile(r"^cc[ -]0\b"), "cc0")]
NOISE = re.compile(r"^creative commons |(?: (?:international|generic|unported))?(?: licen[cs]e)?$")
PARENTHESIS = re.compile(r"^(.*?)\s*\(([^()]*)\)$")
TAG = re.compile(r"<[^<>]*>")  # HTML left in a printed name ("... 3.0\n<p>")
UNVERSIONED = "?"  # the version a text left out ("CC BY-SA"): any version the URL names
DEFAULT_VERSION = "4.0"  # ... or this one when there is no URL
PUBLIC_DOMAIN = {"public-domain", "PDM-1.0", "CC0-1.0"}  # a generic "public domain" text fits any of these URLs


def _cc(elements: str, version: str | None, port: str | None) -> str:
    parts = re.split(r"[ -]", elements.upper())
    return "-".join(["CC", *parts, version or UNVERSIONED] + ([port.upper()] if port else []))


def from_url(license_url: str) -> str | None:
    """The licence a URL names (CC deeds, CC0, the PD Mark, Commons' PD templates, Flickr's and
    the US government's public-domain pages, Flickr's all-rights-reserved help page, the GFDL,
    the Free Art License), or None."""
    url = license_url.strip().lower()
    if m := CC_URL.search(url):
        return _cc(m.group(1), m.group(2), m.group(3))
    if m := CC0_URL.search(url):
        return f"CC0-{m.group(1)}"
    if m := PDM_URL.search(url):
        return f"PDM-{m.group(1)}"
    if COMMONS_PD_URL.search(url) or FLICKR_URL.search(url):
        return "public-domain"
    if m := GFDL_URL.search(url):
        return "GFDL-1.3-or-later" if m.group(1) else "GFDL-1.2-or-later"
    if RESERVED_URL.search(url):
        return "all-rights-reserved"
    if LAL_URL.search(url):
        return "LAL-1.3"
    return None


def _from_name(text: str) -> str | None:
    if text in FLICKR_IDS:
        return FLICKR_IDS[text]
    if WIKIDATA_ITEM.match(text):  # a Wikidata item, as Commons' structured data names a licence
        return WIKIDATA_ITEMS.get(text.upper())
    if text in NAMES:
        return NAMES[text]
    if text.startswith(("pd-", "pd ")):  # Commons templates: PD-US, PD-old-70, PD-self, ...
        return "public-domain"
    for spelling, word in SPELLINGS:
        text = spelling.sub(word, text)
    text = NOISE.sub("", text)  # "Creative Commons Attribution 4.0 International License"
    if text in NAMES:
        return NAMES[text]
    if m := CC_TEXT.match(text):
        return _cc(m.group(1), m.group(2), m.group(3))
    if (m := ATTRIBUTION_TEXT.match(text)) and (m.group(1) or m.group(2)):  # "Attribution-ShareAlike 4.0 ..."
        elements = [ELEMENTS[e] for e in re.findall(r"noncommercial|sharealike|noderivs", m.group(1))]
        port = [m.group(3).upper()] if m.group(3) else []
        return "-".join(["CC", "BY", *elements, m.group(2) or UNVERSIONED, *port])
    return None


def from_text(license_text: str) -> str | None:
    """The licence a free-text name gives (Flickr's ids and names, Commons' LicenseShortName,
    SPDX ids, the long names sources print, a Wikidata item of WIKIDATA_ITEMS such as
    "Q20007257"), or None. A CC name without a version gets "?" for it. "Attribution 4.0
    International (CC BY 4.0)" is read on both sides of the parenthesis, which must agree."""
    text = " ".join(TAG.sub(" ", license_text).strip().lower().replace("_", " ").split())
    if (found := _from_name(text)) or not (m := PARENTHESIS.match(text)):
        return found
    outer, inner = _from_name(m.group(1)), _from_name(m.group(2))
    return _agree(outer, inner) if outer and inner else None


def _base(license_id: str) -> tuple[str, str, str | None]:
    """(elements, version, port) of a CC id; (id, '', None) for others."""
    if m := re.match(r"^(CC-BY(?:-(?:NC|ND|SA))*)-(\d\.\d|\?)(?:-([A-Z]{2}|IGO))?$", license_id):
        return m.group(1), m.group(2), m.group(3)
    return license_id, "", None


def _agree(a: str, b: str) -> str | None:
    """The one licence two readings name, or None when they differ. A reading may leave out
    what the other states (a CC version or port) or say "public domain" where the other names
    CC0 or the PD Mark; the more specific one is the licence."""
    if a == b:
        return a
    if "public-domain" in (a, b) and {a, b} <= PUBLIC_DOMAIN:
        return b if a == "public-domain" else a
    (ea, va, pa), (eb, vb, pb) = _base(a), _base(b)
    if ea != eb or not (va and vb) or (UNVERSIONED not in (va, vb) and va != vb) or (pa and pb and pa != pb):
        return None
    version = vb if va == UNVERSIONED else va
    return "-".join([ea, version] + ([pa or pb] if pa or pb else []))


def url_of(license_id: str) -> str:
    """The canonical URL of a canonical id (CC deed with version and port, CC0, the PD Mark, the
    GFDL, the Free Art License), which `resolve` reads back as the same licence; '' for ids without one
    (public-domain, all-rights-reserved). A collector that knows the licence but not its URL
    (Commons' structured data) writes this one, so text and URL always agree."""
    if license_id in ("public-domain", "all-rights-reserved"):
        return ""
    if m := re.match(r"^(CC0|PDM)-(\d\.\d)$", license_id):
        return f"https://creativecommons.org/publicdomain/{'zero' if m.group(1) == 'CC0' else 'mark'}/{m.group(2)}/"
    if license_id == "GFDL-1.2-or-later":
        return "https://www.gnu.org/copyleft/fdl.html"
    if license_id == "GFDL-1.3-or-later":
        return "https://www.gnu.org/licenses/fdl-1.3.html"
    if license_id == "LAL-1.3":
        return "https://artlibre.org/licence/lal/en/"
    elements, version, port = _base(license_id)
    if not version or version == UNVERSIONED:
        raise ValueError(f"no canonical URL for licence {license_id!r}")
    url = f"https://creativecommons.org/licenses/{elements[3:].lower()}/{version}/"
    return url + (f"{port.lower()}/" if port else "")


def _specific(license_id: str | None) -> str | None:
    return license_id.replace(f"-{UNVERSIONED}", f"-{DEFAULT_VERSION}") if license_id else None


def resolve(license_text: str, license_url: str = "") -> tuple[str | None, str]:
    """(canonical id or None, reason when None). Text and URL must name the same licence:
    when both are given and they differ, or one of them cannot be read, the record is a
    conflict and never takes the permissive side. One that is empty leaves the other to decide."""
    text, url = license_text.strip(), license_url.strip()
    if FILE_PAGE_URL.match(url.lower()):
        url = ""
    by_text, by_url = from_text(text) if text else None, from_url(url) if url else None
    if text and url:
        if by_text and by_url and (agreed := _agree(by_text, by_url)):
            return _specific(agreed), ""
        shown_text = by_text or f"{text[:80]!r} (unrecognised)"
        shown_url = by_url or f"{url[:120]!r} (unrecognised)"
        if by_text and by_url:
            shown_text, shown_url = _specific(by_text), _specific(by_url)
        return None, f"licence conflict: text {shown_text}, url {shown_url}"
    if found := by_text or by_url:
        return _specific(found), ""
    return None, f"licence unrecognised: {(text or url or '(empty)')[:120]}"


def canonical(license_text: str, license_url: str = "") -> str | None:
    """Canonical id of a licence, or None when it is not recognised or text and URL conflict."""
    return resolve(license_text, license_url)[0]


def author(attribution: str) -> str:
    """The attribution when it names someone; '' when it only says that nobody is named (an
    unknown or missing author, Commons' banners for it, "Own work" alone). A template that
    repeats itself ("Unknown authorUnknown author", its visible and hidden text) is read once."""
    text = " ".join(attribution.split())
    shown = re.sub(r"[\s.:;,!()\[\]{}]+", " ", text.lower()).strip()
    half = len(shown) // 2
    if shown and len(shown) % 2 == 0 and shown[:half] == shown[half:]:
        shown = shown[:half].strip()
    return "" if NO_AUTHOR.match(shown) else text


@dataclass(frozen=True)
class Verdict:
    ok: bool
    license_id: str  # canonical id, '' when unrecognised
    reason: str  # '' when ok


def check(license_text: str, license_url: str, attribution: str, allow: list[str]) -> Verdict:
    """Is this record's licence on the allowlist, with attribution where the licence needs it?
    Reasons keep the raw licence string, so a drop can be audited against the source."""
    license_id, reason = resolve(license_text, license_url)
    shown = (license_text or license_url or "(empty)")[:120]
    if license_id is None:
        return Verdict(False, "", reason)
    if not any(fnmatchcase(license_id, pattern) for pattern in allow):
        return Verdict(False, license_id, f"licence not allowed: {license_id} ({shown})")
    if NEEDS_ATTRIBUTION.match(license_id) and not author(attribution):
        named = f", and {attribution.strip()[:80]!r} names nobody" if attribution.strip() else ""
        return Verdict(False, license_id, f"licence attribution missing: required by {license_id}{named}")
    return Verdict(True, license_id, "")
