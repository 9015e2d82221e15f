"""Small Wikimedia Commons dumps in the published formats, for the commons-dump collector's
tests and the collection-to-corpus workflow test: the MediaInfo JSON array (plain, gzip,
bzip2) and a mysqldump of the image table."""

import bz2
import gzip
import json
from pathlib import Path

from gpic.collect.commons_dump import IMAGE_COLUMNS


def snak(prop, value=None, snaktype="value"):
    out = {"snaktype": snaktype, "property": prop}
    if snaktype == "value":
        if isinstance(value, str) and value.startswith("Q"):
            out["datavalue"] = {"value": {"entity-type": "item", "numeric-id": int(value[1:]), "id": value},
                                "type": "wikibase-entityid"}
        else:
            out["datavalue"] = {"value": value, "type": "string"}
    return out


def stmt(prop, value=None, rank="normal", snaktype="value", **qualifiers):
    out = {"mainsnak": snak(prop, value, snaktype), "type": "statement", "id": f"M$x-{prop}", "rank": rank}
    if qualifiers:
        out["qualifiers"] = {p: [snak(p, v) for v in vs] for p, vs in qualifiers.items()}
        out["qualifiers-order"] = list(qualifiers)
    return out


def author(name):
    """The creator statement own-work uploads carry: somevalue with an author name string."""
    return stmt("P170", snaktype="somevalue", P2093=[name], P4174=[name.replace(" ", "")],
                P3831=["Q33231"])


def entity(page_id, title, *statements, **extra):
    by_prop = {}
    for s in statements:
        by_prop.setdefault(s["mainsnak"]["property"], []).append(s)
    out = {"type": "mediainfo", "id": f"M{page_id}", "pageid": page_id, "ns": 6, "title": title,
           "lastrevid": 1000 + page_id, "modified": "2024-01-01T00:00:00Z",
           "labels": {"en": {"language": "en", "value": title}}, "descriptions": {},
           "statements": by_prop or []}
    if title is None:
        for key in ("pageid", "ns", "title", "modified"):
            del out[key]
    return out | extra


def write_mediainfo(path: Path, entities) -> Path:
    lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in entities]
    data = ("[\n" + ",\n".join(lines) + "\n]\n").encode()
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wb") as f:
        f.write(data)
    return path


def sql(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    escaped = (value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\0", "\\0").replace("\x1a", "\\Z"))
    return f"'{escaped}'"


def image(name, width, height, mime="image/jpeg", sha1="phoiac9h4m842xq45sp7s6u21eteeq1",
          timestamp="20200102030405", metadata='{"data":{"Make":"C, (x);"}}'):
    major, minor = mime.split("/")
    return (name, 123456, width, height, metadata, 8, "BITMAP", major, minor, 7, 9, timestamp, sha1)


def write_images(path: Path, rows, per_insert=3, create=True) -> Path:
    """A mysqldump of the image table as Wikimedia publishes it: comments, conditional comments,
    the CREATE TABLE (with strings holding ';' and parentheses) and extended INSERTs."""
    out = ["-- MySQL dump 10.19  Distrib 10.6.16-MariaDB, for debian-linux-gnu (x86_64)\n--\n",
           "-- Host: 10.64.0.1    Database: commonswiki\n",
           "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n/*!40101 SET NAMES binary*/;\n\n"]
    if create:
        defs = ",\n".join(f"  `{c}` varbinary(255) NOT NULL DEFAULT ''" for c in IMAGE_COLUMNS)
        out += ["DROP TABLE IF EXISTS `image`;\n/*!40101 SET @saved_cs_client     = @@character_set_client */;\n",
                f"CREATE TABLE `image` (\n{defs},\n  PRIMARY KEY (`img_name`),\n"
                "  KEY `img_actor_timestamp` (`img_actor`,`img_timestamp`)\n"
                ") ENGINE=InnoDB DEFAULT CHARSET=binary COMMENT='files; (uploads)';\n\n"]
    out += ["LOCK TABLES `image` WRITE;\n/*!40000 ALTER TABLE `image` DISABLE KEYS */;\n"]
    for i in range(0, len(rows), per_insert):
        out.append("INSERT INTO `image` VALUES " + ",".join(
            "(" + ",".join(sql(v) for v in row) + ")" for row in rows[i:i + per_insert]) + ";\n")
    out += ["/*!40000 ALTER TABLE `image` ENABLE KEYS */;\nUNLOCK TABLES;\n-- Dump completed on 2024-01-01\n"]
    data = "".join(out).encode()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(data)
    return path
