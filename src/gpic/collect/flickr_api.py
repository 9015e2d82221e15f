"""The Flickr API collector: every public photo uploaded in [start, end) under a licence the
allowlist admits, one part per upload-date window (docs/collection.md).

Flickr's licence ids are read at run time (flickr.photos.licenses.getInfo, once per part):
ids come and go, so each id's name and URL go through `gpic.licenses.resolve` and only ids
whose canonical licence matches the allowlist are searched. A row keeps the id's name and URL
as its licence, so the fetch stage's gate reads the same text against the same URL.

flickr.photos.search pages through at most about 4,000 results (`max_results`); later pages
repeat earlier ones. A window whose first page reports more is split in halves, recursively,
until each piece fits. A piece that cannot be split (under two seconds long: the API's dates
are whole seconds) is read up to the cap and the photos past it are recorded as a refused
row naming the window, and in the log, never dropped in silence.

State after each page (JSON): `licenses` (id -> [name, url] as getInfo gave them),
`allowed` (the ids searched), `pending` (sub-windows still to read, the current one first)
and `page` (the next page of the current one). A split is checkpointed as an empty page,
so a restart repeats neither a finished page nor getInfo nor a split."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from gpic import licenses
from gpic.collect.common import REASON, ApiClient, CollectError, Page, RateLimit, Retry, Window, now, windows

log = logging.getLogger(__name__)

COLUMNS = ["owner_id", "owner_name", "upload_date", "license_id_flickr", "page_url", "size", "original_width",
           "original_height", "window"]
# The schema's defaults: the collector also runs on a section that was not validated (tests, `gpic collect`).
DEFAULTS = {"api": "https://api.flickr.com/services/rest/", "api_key_env": "FLICKR_API_KEY", "start": "2004-02-01",
            "window_days": 7, "size": "url_l", "per_page": 500, "max_results": 4000, "calls_per_hour": 3600}
# The top-level `licenses.allow` reaches a collector as `allow` in its section; without it, this.
DEFAULT_ALLOW = ["CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-[0-9]*"]
# The size keys of search's `extras`, largest first, as Flickr's answers name them: the 1024-px
# rendition is url_l (its file name's suffix is _b; the extras key is not), 800 px url_c, 640 url_z,
# 500 url_m. A photo without the configured size falls back rightwards (Flickr omits a size larger
# than the upload, and sizes above 1024 a member may hide).
SIZES = ["url_o", "url_6k", "url_5k", "url_4k", "url_3k", "url_k", "url_h", "url_l", "url_c", "url_z", "url_m"]
FIELDS = ["license", "owner_name", "date_upload", "o_dims"]
# 10: the search API is not available; 105: service currently unavailable; 106: a temporary failure.
RETRY_CODES = {"10", "105", "106"}
BURST = 1  # requests evenly spaced at the key's rate: no burst to be throttled for


def settings(cfg: dict) -> dict:
    return {**DEFAULTS, **cfg}


def parts(cfg: dict) -> list[str]:
    """Upload-date windows of `window_days` from `start` to `end`."""
    cfg = settings(cfg)
    if "end" not in cfg:
        raise ValueError("config collect.flickr.end is missing: the upload date where enumeration stops")
    return [w.name for w in windows(cfg["start"], cfg["end"], cfg["window_days"])]


def api_key(cfg: dict) -> str:
    """The key from the environment, never from config (configs are committed and logged)."""
    name = cfg["api_key_env"]
    key = os.environ.get(name, "").strip()
    if not key:
        raise ValueError(f"the Flickr collector needs an API key in the environment variable {name} "
                         f"(named by collect.flickr.api_key_env); it is unset or empty")
    return key


def _checker(part: str) -> Callable[[dict, object], None]:
    """Flickr answers errors with HTTP 200 and `stat: fail`: a temporary one is retried, any
    other (an invalid key, a bad parameter) fails the part."""

    def check(payload: dict, headers) -> None:
        if payload.get("stat") == "ok":
            return
        code, message = str(payload.get("code", "")), str(payload.get("message", ""))[:200]
        if payload.get("stat") == "fail" and code in RETRY_CODES:
            raise Retry(f"flickr error {code}: {message}")
        if payload.get("stat") == "fail":
            raise CollectError(f"flickr {part}: API error {code}: {message}")
        raise CollectError(f"flickr {part}: answer without stat ok: {str(payload)[:200]}")

    return check


def _call(client: ApiClient, api: str, key: str, params: dict, where: str) -> dict:
    """One REST call (the client keeps the key out of its logs and errors)."""
    return client.get(api, {**params, "api_key": key, "format": "json", "nojsoncallback": 1}, where)


def licence_entries(payload: dict, part: str) -> list[tuple[str, str, str]]:
    """(id, name, url) of each licence in getInfo's answer; an entry without an id is logged and
    left out, an answer without the list fails the part."""
    listed = payload.get("licenses")
    entries = listed.get("license") if isinstance(listed, dict) else None
    if not isinstance(entries, list):
        raise CollectError(f"flickr {part}: flickr.photos.licenses.getInfo answer has no licenses.license list")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or str(entry.get("id", "")).strip() == "":
            log.warning("flickr %s: getInfo entry without an id ignored: %.200r", part, entry)
            continue
        out.append((str(entry["id"]).strip(), str(entry.get("name") or ""), str(entry.get("url") or "")))
    return out


def licence_verdicts(payload: dict, part: str, allow: list[str]) -> list[dict]:
    """What the licence gate makes of each id getInfo lists, beside what the built-in table
    (`licenses.FLICKR_IDS`) expects of it: `drift` names a new id, a changed licence, or a name
    and URL that disagree, so a renamed or added licence is seen before it costs a run."""
    out = []
    for license_id, name, url in licence_entries(payload, part):
        canonical, reason = licenses.resolve(name, url)
        expected = licenses.FLICKR_IDS.get(license_id)
        if canonical is None:
            drift = reason
        elif expected is None:
            drift = "new id: not in the built-in table"
        elif canonical != expected:
            drift = f"changed: the built-in table says {expected}"
        else:
            drift = ""
        allowed = canonical is not None and any(fnmatchcase(canonical, pattern) for pattern in allow)
        out.append({"id": license_id, "name": name, "url": url, "canonical": canonical or "", "table": expected or "",
                    "allowed": allowed, "drift": drift})
    return out


def licence_table(payload: dict, part: str, allow: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(id -> [name, url], the ids whose licence the allowlist admits) from getInfo's answer."""
    verdicts = licence_verdicts(payload, part, allow)
    for v in verdicts:
        if not v["canonical"]:
            log.warning("flickr licence id %s (%r, %r) not collected: %s", v["id"], v["name"], v["url"], v["drift"])
    table = {v["id"]: [v["name"], v["url"]] for v in verdicts}
    allowed = [v["id"] for v in verdicts if v["allowed"]]
    if not allowed:  # an empty `license` parameter would search every licence
        raise CollectError(f"flickr {part}: none of the licences getInfo lists ({len(table)}) is on the allowlist "
                           f"{allow}: nothing to collect")
    return table, sorted(allowed, key=lambda i: (len(i), i))


def live_licences(cfg: dict, ctx) -> dict:
    """getInfo's answer now, with the key and client a collection would use."""
    cfg = settings(cfg)
    key = api_key(cfg)
    client = ctx.client(check=_checker("licences"), secrets=(key,))
    return _call(client, cfg["api"], key, {"method": "flickr.photos.licenses.getInfo"}, "flickr licences")


def ladder(size: str) -> list[str]:
    """The size keys tried for a photo: the configured one, then each smaller one."""
    if size not in SIZES:
        raise ValueError(f"config collect.flickr.size {size!r} is not a size key of Flickr's extras: "
                         f"choose one of {', '.join(SIZES)}")
    return SIZES[SIZES.index(size):]


def search_params(window: Window, page: int, cfg: dict, allowed: list[str]) -> dict:
    """flickr.photos.search over [start, end): its upload dates are whole seconds, both ends included.
    Only the sizes of the ladder are asked for (each is a URL and two numbers per photo)."""
    return {"method": "flickr.photos.search", "license": ",".join(allowed),
            "min_upload_date": int(window.start.timestamp()), "max_upload_date": int(window.end.timestamp()) - 1,
            "sort": "date-posted-asc", "media": "photos", "extras": ",".join([*FIELDS, *ladder(cfg["size"])]),
            "per_page": cfg["per_page"], "page": page}


def _result(payload: dict, where: str) -> tuple[int, int, list]:
    """(total, pages, photo records) of a search answer; a malformed answer fails the part."""
    photos = payload.get("photos")
    if not isinstance(photos, dict) or not isinstance(photos.get("photo"), list):
        raise CollectError(f"{where}: answer has no photos.photo list: {str(payload)[:200]}")
    try:
        return int(photos.get("total")), int(photos.get("pages")), photos["photo"]
    except (TypeError, ValueError):
        raise CollectError(f"{where}: answer's photos.total or photos.pages is not a number: "
                           f"{photos.get('total')!r}, {photos.get('pages')!r}") from None


def _digits(value) -> str:
    text = str(value if value is not None else "").strip()
    return text if text.isdigit() else ""


def photo_row(photo, state: dict, cfg: dict, window: str, where: str, retrieved: str) -> dict:
    """One manifest row; a record the collector cannot take keeps its reason in REASON."""
    if not isinstance(photo, dict):
        return {"source": "flickr", "window": window, REASON: f"{where}: photo record is not an object: {photo!r:.120}"}
    pid = str(photo.get("id") or "").strip()
    owner, owner_name = str(photo.get("owner") or "").strip(), str(photo.get("ownername") or "").strip()
    license_id = str(photo["license"]).strip() if photo.get("license") is not None else ""
    name, url = state["licenses"].get(license_id, ["", ""])
    uploaded = _digits(photo.get("dateupload"))
    row = {"source": "flickr", "source_id": pid, "license": name, "license_url": url,
           "attribution": owner_name or (f"Flickr user {owner}" if owner else ""),
           "title": str(photo.get("title") or ""),
           "retrieved_at": retrieved, "owner_id": owner, "owner_name": owner_name, "license_id_flickr": license_id,
           "upload_date": datetime.fromtimestamp(int(uploaded), UTC).isoformat() if uploaded else "",
           "page_url": f"https://www.flickr.com/photos/{owner}/{pid}/" if owner and pid else "",
           "original_width": _digits(photo.get("o_width")), "original_height": _digits(photo.get("o_height")),
           "window": window}
    size = next((s for s in ladder(cfg["size"]) if str(photo.get(s) or "").strip()), "")
    if size:
        suffix = size.removeprefix("url_")
        row.update(url=str(photo[size]).strip(), size=size, width=_digits(photo.get(f"width_{suffix}")),
                   height=_digits(photo.get(f"height_{suffix}")))
    record = f"{where}: photo {pid or '(no id)'}"
    if not pid.isdigit():
        row[REASON] = f"{where}: photo record without a numeric id: {pid[:40] or '(none)'}"
    elif not license_id:
        row[REASON] = f"{record}: no license field"
    elif license_id not in state["licenses"]:
        row[REASON] = f"{record}: licence id {license_id[:20]} is not one flickr.photos.licenses.getInfo lists"
    elif license_id not in state["allowed"]:
        row[REASON] = f"{record}: licence id {license_id} ({name}) is not on the allowlist"
    elif not uploaded:
        row[REASON] = f"{record}: dateupload {str(photo.get('dateupload', '(missing)'))[:40]!r} is not unix seconds"
    elif not size:
        row[REASON] = f"{record}: no image URL at {cfg['size']} or any smaller size"
    return row


def overflow_row(window: Window, total: int, cap: int, where: str) -> dict:
    """The photos of an unsplittable window past the API's cap: not enumerable, so recorded."""
    return {"source": "flickr", "window": window.name,
            REASON: f"{where}: {total} photos uploaded in {window.name} but flickr.photos.search pages through at "
                    f"most {cap} and a window under two seconds cannot be split: {total - cap} not collected"}


def splittable(window: Window) -> bool:
    return (window.end - window.start).total_seconds() >= 2


def pages(part: str, cfg: dict, ctx, state: dict | None) -> Iterator[Page]:
    """Pages of one upload-date window: getInfo once, then each sub-window's search pages in order."""
    cfg = settings(cfg)
    key = api_key(cfg)
    rate = RateLimit(cfg["calls_per_hour"] / 3600, burst=BURST, sleep=ctx.sleep)
    client = ctx.client(check=_checker(part), rate=rate, secrets=(key,))
    call = functools.partial(_call, client, cfg["api"], key)
    cap, per_page = cfg["max_results"], cfg["per_page"]
    if state is None:
        table, allowed = licence_table(call({"method": "flickr.photos.licenses.getInfo"}, f"flickr {part} licences"),
                                       part, cfg.get("allow") or DEFAULT_ALLOW)
        state = {"licenses": table, "allowed": allowed, "pending": [part], "page": 1}
    while state["pending"]:
        window, page, rest = Window.parse(state["pending"][0]), state["page"], state["pending"][1:]
        where = f"flickr {part} window {window.name} page {page}"
        total, last, photos = _result(call(search_params(window, page, cfg, state["allowed"]), where), where)
        retrieved = now()
        if page == 1 and total > cap and splittable(window):
            halves = window.halves()
            log.info("%s: %d photos, over the cap of %d: split into %s and %s", where, total, cap,
                     halves[0].name, halves[1].name)
            state = {**state, "pending": [h.name for h in halves] + rest}
            yield Page([], state)
            continue
        rows = [photo_row(photo, state, cfg, window.name, where, retrieved) for photo in photos]
        if total > cap:  # past the cap the API repeats itself: read only the pages below it
            last = min(last, math.ceil(cap / per_page))
            if page == 1:
                log.warning("%s: %d photos in an unsplittable window, %d past the API's cap not collected",
                            where, total, total - cap)
                rows.append(overflow_row(window, total, cap, where))
        if page >= last or not photos:
            state = {**state, "pending": rest, "page": 1}
        else:
            state = {**state, "page": page + 1}
        yield Page(rows, state if state["pending"] else None)
