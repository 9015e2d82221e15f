"""The `commons` collector: Wikimedia Commons files through the MediaWiki Action API, one part
per upload-time window (or per category), with the licence, author and restrictions that the
files' description pages state (imageinfo's extmetadata).

A part is one query, read in series through one client: generator=allimages sorted by upload
time over the window (or generator=categorymembers over one category) with prop=imageinfo
for the URLs, sizes, MIME type, SHA-1 and extmetadata, and maxlag on every request
(API:Etiquette). Answers follow API:Continue: a generator batch may take several answers
before every file's imageinfo has arrived (`batchcomplete` says when it has), so a batch is
written only once it is complete, and the checkpoint after it is the generator's continuation
alone. allimages' bounds are inclusive at both ends: a file uploaded exactly at a window's
end belongs to the next window and is left to it.

Licences are kept as the source states them (the fetch stage's licence gate reads them
against their URL); a file refused here keeps its reason in `collect_reason`."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Iterator

from gpic import licenses
from gpic.collect.common import (
    REASON,
    CollectError,
    Page,
    Retry,
    Window,
    as_datetime,
    html_to_text,
    now,
    windows,
)
from gpic.collect.commons_dump import rendition_width
from gpic.http import retry_after

log = logging.getLogger(__name__)

SOURCE = "wikimedia"
COLUMNS = ["page_id", "sha1", "mime", "original_url", "original_width", "original_height", "upload_time",
           "license_short_name", "usage_terms", "artist"]
# The schema's defaults (config.schema.yaml, collect.commons), for a section given by hand.
DEFAULTS = {"api": "https://commons.wikimedia.org/w/api.php", "start": "2004-09-07", "window_days": 30,
            "categories": [], "thumb_width": 960, "batch": 50, "maxlag": 5}
IIPROP = "url|size|mime|sha1|extmetadata|timestamp"
# Only the extmetadata read here: a description page's whole metadata (descriptions,
# categories, EXIF) is most of an answer's size.
EXTMETADATA = ["LicenseShortName", "UsageTerms", "LicenseUrl", "Artist", "Credit", "AttributionRequired",
               "Restrictions"]
MAXLAG_PAUSE_S = 5.0  # Manual:Maxlag_parameter: pause at least 5 s after a lag error
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _settings(cfg: dict) -> dict:
    cfg = {**DEFAULTS, **cfg}
    if "end" not in cfg:
        raise ValueError("config collect.commons.end is missing: the upload time where enumeration stops")
    return cfg


def category_title(category: str) -> str:
    """`Category:X` as MediaWiki spells it: prefix once, spaces for underscores, first letter
    capitalised (Commons' titles are case-sensitive after it)."""
    name = " ".join(category.replace("_", " ").split())
    if name.lower().startswith("category:"):
        name = name[len("category:"):].strip()
    if not name:
        raise ValueError(f"config collect.commons.categories: {category!r} names no category")
    return f"Category:{name[0].upper()}{name[1:]}"


def category_part(category: str) -> str:
    """A file name for a category's part: its readable letters, and a hash of the title so
    that titles differing only in other characters stay apart."""
    title = category_title(category)
    readable = UNSAFE.sub("_", title.removeprefix("Category:")).strip("._-")[:80]
    return f"category-{readable}-{hashlib.sha1(title.encode()).hexdigest()[:8]}"


def _queries(cfg: dict) -> dict[str, tuple[str, dict, Window | None]]:
    """Part name -> (where, generator parameters, window or None) for every part of the config."""
    batch = str(cfg["batch"])
    if cfg["categories"]:
        out = {}
        for category in cfg["categories"]:
            title = category_title(category)
            out[category_part(category)] = (f"category {title}", {
                "generator": "categorymembers", "gcmtitle": title, "gcmtype": "file", "gcmlimit": batch}, None)
        return out
    return {w.name: (f"window {w.name}", {
        "generator": "allimages", "gaisort": "timestamp", "gaidir": "ascending",
        "gaistart": f"{w.start:%Y-%m-%dT%H:%M:%SZ}", "gaiend": f"{w.end:%Y-%m-%dT%H:%M:%SZ}", "gailimit": batch}, w)
        for w in windows(cfg["start"], cfg["end"], cfg["window_days"])}


def parts(cfg: dict) -> list[str]:
    """Upload-time windows of [start, end), or one part per category when categories are given."""
    return list(_queries(_settings(cfg)))


def check(where: str, answer: dict, headers) -> None:
    """API errors: maxlag asks to come back after Retry-After (else after its lag, 5 s at
    least), ratelimited after Retry-After or a backoff; any other error fails the part."""
    error = answer.get("error")
    if error is None:
        return
    if not isinstance(error, dict):
        raise CollectError(f"{where}: API error {str(error)[:200]!r}")
    code, info = str(error.get("code", "")), str(error.get("info", ""))[:200]
    if code == "maxlag":
        delay = retry_after(headers.get("Retry-After"))
        if delay is None:
            lag = error.get("lag")
            delay = max(MAXLAG_PAUSE_S, float(lag) if isinstance(lag, int | float) else 0.0)
        raise Retry(f"maxlag: {info}", delay)
    if code == "ratelimited":
        raise Retry(f"ratelimited: {info}", retry_after(headers.get("Retry-After")))
    raise CollectError(f"{where}: API error {code or '(no code)'}: {info}")


def pages(part: str, cfg: dict, ctx, state) -> Iterator[Page]:
    """The part's files, one Page per complete generator batch. `state` is {"continue": the
    API's continue object after the last page written}, or None to start."""
    cfg = _settings(cfg)
    queries = _queries(cfg)
    if part not in queries:
        raise ValueError(f"commons: no part {part!r} in this config")
    where, generator, window = queries[part]
    thumb_width = rendition_width(int(cfg["thumb_width"]))
    params = {"action": "query", "format": "json", "formatversion": "2", "maxlag": str(cfg["maxlag"]),
              **generator, "prop": "imageinfo", "iiprop": IIPROP, "iiextmetadatafilter": "|".join(EXTMETADATA)}
    if thumb_width:
        params["iiurlwidth"] = str(thumb_width)
    cont = dict(state["continue"]) if state else {}
    client = ctx.client(check=functools.partial(check, where))
    batch: dict[tuple, tuple[dict, str]] = {}  # (page id, title) -> (page, when its imageinfo was read)
    warned = False
    while True:
        answer = client.get(cfg["api"], {**params, **cont}, f"{where} at {cont or 'start'}")
        read_at = now()
        if answer.get("warnings") and not warned:
            log.warning("%s: API warnings: %s", where, str(answer["warnings"])[:500])
            warned = True
        for page in _answer_pages(answer, where):
            key = (page.get("pageid"), page.get("title"))
            if key not in batch or ("imageinfo" in page and "imageinfo" not in batch[key][0]):
                batch[key] = (page, read_at)
        following = answer.get("continue")
        if following is not None and not isinstance(following, dict):
            raise CollectError(f"{where}: continue is not an object: {str(following)[:200]!r}")
        if following and following == cont:
            raise CollectError(f"{where}: the API answered the same continuation again: {following}")
        if not following or answer.get("batchcomplete") not in (None, False):
            rows = [row for page, at in batch.values() if (row := _row(page, where, window, thumb_width, at))]
            log.debug("%s: batch of %d files, %d rows", where, len(batch), len(rows))
            batch = {}
            yield Page(rows, {"continue": following} if following else None)
            if not following:
                return
        cont = following


def _answer_pages(answer: dict, where: str) -> list[dict]:
    """query.pages of an answer (a list with formatversion=2); none when the query is empty."""
    query = answer.get("query", {})
    found = query.get("pages", []) if isinstance(query, dict) else None
    if isinstance(found, dict):  # formatversion=1 keys pages by id
        found = list(found.values())
    if not isinstance(found, list) or not all(isinstance(p, dict) for p in found):
        raise CollectError(f"{where}: query.pages is not a list of pages: {str(query)[:200]!r}")
    return found


def _meta(extmetadata: dict, name: str) -> str:
    """An extmetadata field's value ({"value": ..., "source": ..., "hidden": ...}) as text."""
    entry = extmetadata.get(name)
    value = entry.get("value") if isinstance(entry, dict) else entry
    return "" if value is None or isinstance(value, dict | list) else str(value)


def _size(info: dict, name: str, problems: list[str]) -> str:
    value = info.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    problems.append(f"missing imageinfo.{name}" if value is None else f"non-numeric imageinfo.{name}")
    return ""


def _row(page: dict, where: str, window: Window | None, thumb_width: int, retrieved_at: str) -> dict | None:
    """One file's manifest row; a refused one carries its reason. None for a file uploaded
    outside the window (allimages' end is inclusive: it is the next window's)."""
    title = str(page.get("title") or "")
    page_id = page.get("pageid")
    page_id = str(page_id) if isinstance(page_id, int) and not isinstance(page_id, bool) else ""
    row = {"source": SOURCE, "source_id": page_id, "page_id": page_id, "title": title,
           "retrieved_at": retrieved_at}
    problems = [] if page_id else ["missing pageid"]
    record = f"collect: {where} record {title or '(no title)'}"
    infos = page.get("imageinfo")
    if not (isinstance(infos, list) and infos and isinstance(infos[0], dict)):
        return row | {REASON: f"{record}: {'; '.join([*problems, 'missing imageinfo'])}"}
    info = infos[0]

    uploaded = str(info.get("timestamp") or "")
    try:
        moment = as_datetime(uploaded) if uploaded else None
    except ValueError:
        moment = None
    if moment is None and (uploaded or window):  # a category's files need no upload time to be placed
        problems.append(f"bad imageinfo.timestamp {uploaded[:40]!r}" if uploaded else "missing imageinfo.timestamp")
    elif window and not window.contains(moment):
        return None

    original = info.get("url")
    if not (isinstance(original, str) and original):
        problems.append("missing imageinfo.url")
        original = ""
    width, height = _size(info, "width", problems), _size(info, "height", problems)
    thumb = info.get("thumburl")
    if thumb_width and isinstance(thumb, str) and thumb:
        row |= {"url": thumb, "width": _size(info, "thumbwidth", problems),
                "height": _size(info, "thumbheight", problems)}
    else:
        row |= {"url": original, "width": width, "height": height}
    mime = str(info.get("mime") or "")
    row |= {"original_url": original, "original_width": width, "original_height": height, "mime": mime,
            "sha1": str(info.get("sha1") or ""), "upload_time": uploaded}

    extmetadata = info.get("extmetadata")
    if extmetadata == []:  # PHP's empty array: none of the fields asked for
        extmetadata = {}
    if not isinstance(extmetadata, dict):
        problems.append("missing imageinfo.extmetadata")
    meta = functools.partial(_meta, extmetadata if isinstance(extmetadata, dict) else {})
    short_name, usage_terms, license_url = meta("LicenseShortName"), meta("UsageTerms"), meta("LicenseUrl").strip()
    license_text = html_to_text(short_name) or html_to_text(usage_terms)
    if isinstance(extmetadata, dict) and not (license_text or license_url):
        problems.append("no licence in extmetadata (LicenseShortName, UsageTerms, LicenseUrl)")
    artist, credit = html_to_text(meta("Artist")), html_to_text(meta("Credit"))
    # Credit is the file's source (a museum's inventory number, "digitized by ..."): it stands in
    # for an absent Artist, but not for an Artist that says the author is unknown or missing.
    attribution = licenses.author(artist) if artist else licenses.author(credit)
    row |= {"license": license_text, "license_url": license_url, "license_short_name": short_name,
            "usage_terms": usage_terms, "artist": artist, "attribution": attribution}
    needs_author = meta("AttributionRequired").strip().lower() == "true" or bool(
        licenses.NEEDS_ATTRIBUTION.match(licenses.canonical(license_text, license_url) or ""))

    restrictions = [r.strip() for r in meta("Restrictions").split("|") if r.strip()]
    if problems:
        row[REASON] = f"{record}: {'; '.join(problems)}"
    elif restrictions:
        row[REASON] = f"collect: restricted: {', '.join(restrictions)}"
    elif needs_author and not attribution:
        said = f" (Artist: {artist[:80]!r})" if artist else ""
        row[REASON] = f"collect: attribution required but no author{said}"
    elif mime and not mime.startswith("image/"):  # absent, the fetch stage's decode decides
        row[REASON] = f"collect: not an image: {mime}"
    return row
