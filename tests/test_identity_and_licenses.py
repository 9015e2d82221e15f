"""Identity functions and the licence gate."""

import re

import pytest

from gpic.identity import make_key, shard_of, split_of
from gpic.layout import block_names, block_shards, bucket_of, bucket_range
from gpic.licenses import canonical, check

ALLOW = ["CC0-1.0", "PDM-1.0", "public-domain", "CC-BY-[0-9]*"]


def test_key_is_stable_and_depends_only_on_source_and_id():
    assert make_key("flickr", "123") == make_key("flickr", "123")
    assert make_key("flickr", "123") != make_key("wikimedia", "123")
    # Golden values: changing the scheme re-keys every published record.
    assert make_key("flickr", "123") == "c4c322a7fcbaef97a6fa"
    assert shard_of("c4c322a7fcbaef97a6fa", 8000) == 3501
    assert len(make_key("a", "b")) == 20 and all(c in "0123456789abcdef" for c in make_key("a", "b"))


def test_shards_and_splits_are_balanced_pure_functions():
    keys = [make_key("flickr", str(i)) for i in range(20000)]
    shards = [shard_of(k, 8) for k in keys]
    assert set(shards) == set(range(8))
    assert max(shards.count(s) for s in range(8)) < 1.1 * 20000 / 8
    splits = [split_of(k, 0.05, 0.1) for k in keys]
    assert abs(splits.count("test") / 20000 - 0.1) < 0.01
    assert abs(splits.count("val") / 20000 - 0.05) < 0.01
    assert [shard_of(k, 8) for k in keys[:50]] == shards[:50]


@pytest.mark.parametrize("n_shards,n_buckets", [(8, 1), (8, 2), (8000, 80), (7, 3), (3, 5)])
def test_buckets_are_contiguous_ranges_covering_every_shard(n_shards, n_buckets):
    ranges = [bucket_range(b, n_buckets, n_shards) for b in range(n_buckets)]
    assert [s for r in ranges for s in r] == list(range(n_shards))
    assert all(bucket_of(s, n_buckets, n_shards) == b for b, r in enumerate(ranges) for s in r)


def test_blocks_cover_the_shards_in_order():
    assert block_names(8, 4) == ["00000-00003", "00004-00007"]
    assert block_names(7, 3) == ["00000-00002", "00003-00005", "00006-00006"]
    assert [s for b in block_names(8000, 10) for s in block_shards(b)] == [f"{i:05d}" for i in range(8000)]


# Every mapping the gate knows, as the sources write it: Flickr's API ids and names,
# Commons' LicenseShortName / LicenseUrl values, and the forms that must stay unrecognised.
LICENCES = [
    # Flickr licence ids (flickr.photos.licenses.getInfo)
    ("0", "", "all-rights-reserved"),
    ("1", "", "CC-BY-NC-SA-2.0"),
    ("2", "", "CC-BY-NC-2.0"),
    ("3", "", "CC-BY-NC-ND-2.0"),
    ("4", "", "CC-BY-2.0"),
    ("5", "", "CC-BY-SA-2.0"),
    ("6", "", "CC-BY-ND-2.0"),
    ("7", "", "public-domain"),
    ("8", "", "public-domain"),
    ("9", "", "CC0-1.0"),
    ("10", "", "PDM-1.0"),
    ("11", "", "CC-BY-4.0"),
    ("12", "", "CC-BY-SA-4.0"),
    ("13", "", "CC-BY-ND-4.0"),
    ("14", "", "CC-BY-NC-4.0"),
    ("15", "", "CC-BY-NC-SA-4.0"),
    ("16", "", "CC-BY-NC-ND-4.0"),
    # Flickr licence names, with the URLs the API gives beside them
    ("All Rights Reserved", "", "all-rights-reserved"),
    ("Attribution License", "https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0"),
    ("Attribution License", "", "CC-BY-2.0"),
    ("Attribution-ShareAlike License", "", "CC-BY-SA-2.0"),
    ("Attribution-NoDerivs License", "", "CC-BY-ND-2.0"),
    ("Attribution-NonCommercial License", "", "CC-BY-NC-2.0"),
    ("Attribution-NonCommercial-ShareAlike License", "", "CC-BY-NC-SA-2.0"),
    ("Attribution-NonCommercial-NoDerivs License", "", "CC-BY-NC-ND-2.0"),
    ("No known copyright restrictions", "https://www.flickr.com/commons/usage/", "public-domain"),
    ("No known copyright restrictions", "", "public-domain"),
    ("United States Government Work", "http://www.usa.gov/copyright.shtml", "public-domain"),
    ("United States Government Work", "https://www.usa.gov/government-works", "public-domain"),
    ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("Public Domain Dedication (CC0)", "", "CC0-1.0"),
    ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/", "PDM-1.0"),
    ("Public Domain Mark", "", "PDM-1.0"),
    ("Attribution 4.0 International", "", "CC-BY-4.0"),
    ("Attribution-ShareAlike 4.0 International", "", "CC-BY-SA-4.0"),
    # Forms the collectors meet: Flickr's newer names, Commons' UsageTerms, IGO ports and
    # multi-version templates (the first version listed is read).
    ("Public Domain Dedication (CC0 1.0)", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/", "PDM-1.0"),
    ("Creative Commons Zero, Public Domain Dedication", "http://creativecommons.org/publicdomain/zero/1.0/deed.en",
     "CC0-1.0"),
    ("CC BY 3.0 IGO", "https://creativecommons.org/licenses/by/3.0/igo/deed.en", "CC-BY-3.0-IGO"),
    ("CC BY-SA 3.0 igo", "https://creativecommons.org/licenses/by-sa/3.0/igo/", "CC-BY-SA-3.0-IGO"),
    ("CC BY-SA 3.0,2.5,2.0,1.0", "https://creativecommons.org/licenses/by-sa/3.0/", "CC-BY-SA-3.0"),
    ("CC BY-SA 2.5 / 2.0 / 1.0", "", "CC-BY-SA-2.5"),
    ("CC BY-SA 3.0,2.5,2.0,1.0", "https://creativecommons.org/licenses/by-sa/2.5/", None),  # the URL names another
    ("CC BY 3.0 IGO", "https://creativecommons.org/licenses/by/3.0/de/", None),
    ("Attribution-NonCommercial-NoDerivs 4.0 International", "", "CC-BY-NC-ND-4.0"),
    # Wikimedia Commons LicenseShortName (extmetadata), with and without LicenseUrl
    ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0", "CC-BY-SA-4.0"),
    ("CC BY-SA 4.0", "", "CC-BY-SA-4.0"),
    ("CC BY 4.0", "", "CC-BY-4.0"),
    ("CC BY 3.0", "https://creativecommons.org/licenses/by/3.0", "CC-BY-3.0"),
    ("CC BY 2.5", "", "CC-BY-2.5"),
    ("CC BY-SA 3.0 de", "https://creativecommons.org/licenses/by-sa/3.0/de/deed.en", "CC-BY-SA-3.0-DE"),
    ("CC BY 3.0 de", "", "CC-BY-3.0-DE"),
    ("CC-BY-SA-3.0-migrated", "", "CC-BY-SA-3.0"),
    ("CC BY-NC 2.0", "", "CC-BY-NC-2.0"),
    ("cc-by-2.5", "", "CC-BY-2.5"),
    ("CC0", "http://creativecommons.org/publicdomain/zero/1.0/deed.en", "CC0-1.0"),
    ("CC0", "", "CC0-1.0"),
    ("CC0 1.0", "", "CC0-1.0"),
    ("CC PDM 1.0", "", "PDM-1.0"),
    ("Public domain", "", "public-domain"),
    ("PD-US", "", "public-domain"),
    ("PD-old-70", "", "public-domain"),
    ("PD_USGov_NASA", "", "public-domain"),
    ("No restrictions", "https://commons.wikimedia.org/wiki/Template:No_restrictions", "public-domain"),
    ("", "https://commons.wikimedia.org/wiki/Template:PD-USGov-NASA", "public-domain"),
    ("GFDL", "http://www.gnu.org/copyleft/fdl.html", "GFDL-1.2-or-later"),
    ("GFDL", "", "GFDL-1.2-or-later"),
    # named in issue 31 from real records; tests/collect/real/ holds those that were found again
    ("PD", "", "public-domain"),
    ("PDM-Owner", "", "PDM-1.0"),
    ("cc 0", "", "CC0-1.0"),
    ("Creative Commons Attribution-Share Alike 3.0 de", "https://creativecommons.org/licenses/by-sa/3.0/de/",
     "CC-BY-SA-3.0-DE"),
    ("Attribution NonCommercial ShareAlike 4.0 International", "", "CC-BY-NC-SA-4.0"),
    ("All Rights Reserved", "https://www.flickrhelp.com/hc/en-us/articles/10710266545556-Using-Flickr-images-shared-"
                            "by-other-members", "all-rights-reserved"),
    ("United States Government Work", "https://www.usa.gov/government-copyright", "public-domain"),
    # one side empty: the other decides
    ("", "https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0"),
    ("", "https://creativecommons.org/publicdomain/mark/1.0/", "PDM-1.0"),
    # text and URL agree when one leaves out what the other states
    ("CC BY-SA", "https://creativecommons.org/licenses/by-sa/3.0/", "CC-BY-SA-3.0"),
    ("CC BY-SA 3.0", "https://creativecommons.org/licenses/by-sa/3.0/de/", "CC-BY-SA-3.0-DE"),
    ("Public domain", "https://creativecommons.org/publicdomain/mark/1.0/", "PDM-1.0"),
    ("Public domain", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    # SPDX ids and the long names sources print
    ("CC0-1.0", "", "CC0-1.0"),
    ("PDM-1.0", "", "PDM-1.0"),
    ("GFDL-1.2-or-later", "", "GFDL-1.2-or-later"),
    ("CC-BY-SA-3.0-DE", "", "CC-BY-SA-3.0-DE"),
    ("Creative Commons Attribution 4.0 International", "", "CC-BY-4.0"),
    ("Creative Commons Attribution 4.0 International License", "", "CC-BY-4.0"),
    ("Attribution 4.0 International (CC BY 4.0)", "", "CC-BY-4.0"),
    ("Attribution 4.0 International License (CC BY 4.0)", "", "CC-BY-4.0"),
    ("CC BY 4.0 International", "", "CC-BY-4.0"),
    ("CC BY 4.0 International License", "", "CC-BY-4.0"),
    ("Creative Commons Attribution-ShareAlike 3.0 Unported", "", "CC-BY-SA-3.0"),
    ("Creative Commons Attribution-Share Alike 4.0 International License", "", "CC-BY-SA-4.0"),
    ("Attribution-NonCommercial 2.0 Generic (CC BY-NC 2.0)", "", "CC-BY-NC-2.0"),
    ("Creative Commons Attribution-NoDerivatives 4.0 International", "", "CC-BY-ND-4.0"),
    # text and URL disagree, or one of them cannot be read: a conflict, never the permissive side
    ("whatever", "https://creativecommons.org/publicdomain/zero/1.0/", None),
    ("CC BY 4.0", "https://creativecommons.org/licenses/by-nc/4.0/", None),
    ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by/2.0/", None),
    ("CC BY 3.0", "https://creativecommons.org/licenses/by/2.0/", None),
    ("CC BY 3.0 de", "https://creativecommons.org/licenses/by/3.0/at/", None),
    ("Attribution 4.0 International (CC BY-NC 4.0)", "", None),
    # unrecognised
    ("", "", None),
    ("Copyrighted free use", "", None),
    ("CC BY-SA 2.5,2.0,1.0", "", "CC-BY-SA-2.5"),  # Commons multi-version template: each version is granted
    ("17", "", None),
    ("cc by 4.0 and more", "", None),
]


@pytest.mark.parametrize("text,url,expected", LICENCES)
def test_licence_normalisation(text, url, expected):
    assert canonical(text, url) == expected


# What sources send beside a CC BY 2.0 URL: the text must not be overruled by it.
CONFLICTS = [
    ("CC BY-NC 2.0", "text CC-BY-NC-2.0, url CC-BY-2.0"),
    ("CC BY-ND 4.0", "text CC-BY-ND-4.0, url CC-BY-2.0"),
    ("All Rights Reserved", "text all-rights-reserved, url CC-BY-2.0"),
    ("Attribution-NonCommercial License", "text CC-BY-NC-2.0, url CC-BY-2.0"),
    ("Some rights reserved", "text 'Some rights reserved' (unrecognised), url CC-BY-2.0"),
]


@pytest.mark.parametrize("text,shown", CONFLICTS)
def test_licence_conflict_is_dropped_with_both_sides(text, shown):
    verdict = check(text, "https://creativecommons.org/licenses/by/2.0/", "Jane Doe", ALLOW)
    assert not verdict.ok and verdict.license_id == ""
    assert verdict.reason == f"licence conflict: {shown}"


def test_licence_one_side_empty_stands_on_the_other():
    assert check("", "https://creativecommons.org/licenses/by/2.0/", "Jane Doe", ALLOW).license_id == "CC-BY-2.0"
    assert check("CC BY 2.0", "", "Jane Doe", ALLOW).license_id == "CC-BY-2.0"
    assert check("  ", "https://creativecommons.org/licenses/by/2.0/", "Jane Doe", ALLOW).ok
    odd_url = check("CC BY 2.0", "https://example.org/terms", "Jane Doe", ALLOW)
    assert odd_url.reason == "licence conflict: text CC-BY-2.0, url 'https://example.org/terms' (unrecognised)"


def every_canonical_id() -> list[str]:
    """Every id the normaliser can emit: the table's values and every CC combination it builds."""
    from gpic.licenses import FLICKR_IDS, NAMES

    cc = [f"CC-BY{e}-{v}{p}" for e in ("", "-SA", "-ND", "-NC", "-NC-SA", "-NC-ND")
          for v in ("1.0", "2.0", "2.5", "3.0", "4.0") for p in ("", "-DE", "-FR")]
    return sorted({*FLICKR_IDS.values(), *NAMES.values(), *cc})


def test_canonical_ids_map_to_themselves():
    ids = every_canonical_id()
    assert {"CC0-1.0", "PDM-1.0", "public-domain", "GFDL-1.2-or-later", "all-rights-reserved"} <= set(ids)
    assert [i for i in ids if canonical(i) != i] == []
    assert [i for i in ids if canonical(i.lower()) != i] == []


@pytest.mark.parametrize("text,url,expected", LICENCES)
def test_canonical_is_idempotent(text, url, expected):
    once = canonical(text, url)
    assert once is None or canonical(once) == once
    assert once is None or canonical(once, url) == once  # re-read beside the URL it came with


def test_licence_gate_reasons():
    assert check("CC BY 4.0", "", "Jane Doe", ALLOW).ok
    assert check("CC0", "", "", ALLOW).ok  # no attribution needed
    nc = check("Attribution-NonCommercial License", "", "x", ALLOW)
    assert not nc.ok and nc.reason.startswith("licence not allowed: CC-BY-NC-2.0")
    assert not check("CC BY-SA 4.0", "", "x", ALLOW).ok
    assert check("CC BY-SA 4.0", "", "x", ALLOW + ["CC-BY-SA-*"]).ok  # share-alike is an opt-in
    missing = check("CC BY 2.0", "", "  ", ALLOW)
    assert not missing.ok and missing.reason.startswith("licence attribution missing")
    reserved = check("All Rights Reserved", "", "x", ALLOW)
    assert reserved.reason == "licence not allowed: all-rights-reserved (All Rights Reserved)"
    unknown = check("Copyrighted free use", "", "x", ALLOW)
    assert unknown.reason == "licence unrecognised: Copyrighted free use"
    assert check("", "", "x", ALLOW).reason == "licence unrecognised: (empty)"
    assert not check("GFDL", "", "x", ALLOW).ok and not check("13", "", "x", ALLOW).ok  # ND


def test_wikidata_items_read_as_their_licence():
    from gpic.licenses import WIKIDATA_ITEMS, from_text

    assert from_text("Q20007257") == "CC-BY-4.0" and from_text(" q6938433 ") == "CC0-1.0"
    assert canonical("Q18199165") == "CC-BY-SA-4.0" and canonical("Q42716613") == "CC-BY-SA-3.0-DE"
    assert canonical("Q7257361") == "PDM-1.0" and canonical("Q19652") == "public-domain"
    assert canonical("Q50829104") == "GFDL-1.2-or-later" and canonical("Q34179348") == "CC-BY-NC-4.0"
    # unknown, unversioned ("CC BY", Q6905323) and malformed items stay unrecognised
    assert [canonical(q) for q in ("Q6905323", "Q1", "Q0", "Q", "Q12a", "P275")] == [None] * 6
    assert all(canonical(license_id) == license_id for license_id in WIKIDATA_ITEMS.values())
    assert all(re.fullmatch(r"Q[1-9][0-9]*", q) for q in WIKIDATA_ITEMS)


def test_url_of_gives_the_deed_that_resolve_reads_back():
    from gpic.licenses import WIKIDATA_ITEMS, from_url, resolve, url_of

    assert url_of("CC-BY-4.0") == "https://creativecommons.org/licenses/by/4.0/"
    assert url_of("CC-BY-NC-SA-2.0") == "https://creativecommons.org/licenses/by-nc-sa/2.0/"
    assert url_of("CC-BY-SA-3.0-DE") == "https://creativecommons.org/licenses/by-sa/3.0/de/"
    assert url_of("CC0-1.0") == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert url_of("PDM-1.0") == "https://creativecommons.org/publicdomain/mark/1.0/"
    assert url_of("public-domain") == "" and url_of("all-rights-reserved") == ""
    for license_id in sorted({*every_canonical_id(), *WIKIDATA_ITEMS.values()}):
        url = url_of(license_id)
        assert resolve(license_id, url) == (license_id, ""), license_id
        assert not url or from_url(url) == license_id
    for bad in ("CC-BY-?", "MIT", "", "CC-BY"):
        with pytest.raises(ValueError):
            url_of(bad)


def test_wikidata_item_with_its_url_passes_the_gate_and_a_wrong_url_conflicts():
    from gpic.licenses import url_of

    assert check("Q20007257", url_of("CC-BY-4.0"), "Jane Doe", ALLOW).ok
    assert check("Q6938433", url_of("CC0-1.0"), "", ALLOW).ok
    assert not check("Q20007257", url_of("CC-BY-4.0"), "", ALLOW).ok  # attribution still required
    wrong = check("Q20007257", url_of("CC-BY-NC-4.0"), "Jane Doe", ALLOW)
    assert wrong.reason == "licence conflict: text CC-BY-4.0, url CC-BY-NC-4.0"


@pytest.mark.parametrize("attribution,named", [
    ("This file is lacking author information.", False),  # Commons' {{Information}} banner, as text
    ("Unknown", False), ("Unknown author", False), ("Unknown authorUnknown author", False),  # {{Unknown|author}}
    ("unknown photographer", False), ("Anonymous", False), ("Author unknown", False), ("Own work", False),
    ("Unbekannter Fotograf", False), ("Auteur inconnu", False), ("  ", False), ("?", False),
    ("Unknown Mortal Orchestra", True), ("Anonymous Master of Chartres", True), ("Own work by Dora", True),
    ("The original uploader was Elvezio at Italian Wikipedia.", True), ("Jane Unknown", True), ("N/A Studio", True),
])
def test_author_is_a_person_or_organisation_not_a_statement_that_there_is_none(attribution, named):
    from gpic.licenses import author, check

    assert author(attribution) == (" ".join(attribution.split()) if named else "")
    verdict = check("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/", attribution, ["CC-BY-4.0"])
    assert verdict.ok == named
    if not named and attribution.strip():
        assert verdict.reason.startswith("licence attribution missing: required by CC-BY-4.0, and ")
