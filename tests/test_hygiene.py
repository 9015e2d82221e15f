"""Caption hygiene on planted captions: every rule's positive beside a near miss that must pass."""

from collections import Counter

import pytest

from gpic.hygiene import (
    PERSON_TERMS,
    REFUSALS,
    RULES,
    STOCK_OPENINGS,
    Hygiene,
    ngrams,
    opening,
    person_counts,
    words,
)

HYGIENE = Hygiene()
BUS = ("A red double-decker bus crosses a stone bridge over a wide river under a grey sky, with pedestrians on the "
       "pavement and old brick warehouses along the far bank.")
LONG = (BUS + " The bus is painted a glossy red with gold lettering along its side, and its upper deck windows reflect "
        "the clouds. A cyclist in a yellow jacket waits at the end of the bridge, and a row of lamp posts lines the "
        "railing. The photograph has muted colours and a calm, documentary style.")
DRIFT = LONG + " Im Hintergrund sieht man eine alte Kirche mit einem hohen Turm, und der Himmel ist grau und bewölkt."


def flags_of(level: str, text: str, hit_limit: bool = False) -> list[str]:
    return HYGIENE.flags({level: text}, {level: hit_limit})[level]


@pytest.mark.parametrize(("raw", "expected"), [
    ("The image shows a red bus.", ("A red bus.", "The image shows ")),
    ("This photo depicts two cats asleep on a sofa.", ("Two cats asleep on a sofa.", "This photo depicts ")),
    ("The image is a photograph of a lighthouse.", ("A lighthouse.", "The image is a photograph of ")),
    ("This image is a close-up of a ripe strawberry.", ("A close-up of a ripe strawberry.", "This image is ")),
    ("This is a picture of a harbour.", ("A harbour.", "This is a picture of ")),
    ("In this image we can see a tram.", ("A tram.", "In this image we can see ")),
    ("In the image, there are three goats.", ("Three goats.", "In the image, there are ")),
    ("In the image, a man rides a bicycle.", ("A man rides a bicycle.", "In the image, ")),
    ("A photo of a dog.", ("A dog.", "A photo of ")),
    ("<|im_start|>assistant\nA dog.", ("A dog.", "")),
    ("assistant: A  dog\n on a  sofa.<|im_end|>", ("A dog on a sofa.", "")),
    # near misses: kept word for word
    ("The images on the wall show cats.", ("The images on the wall show cats.", "")),
    ("The photographer shows a print to a client.", ("The photographer shows a print to a client.", "")),
    ("A black and white photo of a harbour.", ("A black and white photo of a harbour.", "")),
    ("A close-up of a dog's nose.", ("A close-up of a dog's nose.", "")),
    ("In the image of the saint, gold leaf glows.", ("In the image of the saint, gold leaf glows.", "")),
    ("User interface of a banking app on a phone.", ("User interface of a banking app on a phone.", "")),
    ("System of pulleys in a workshop.", ("System of pulleys in a workshop.", "")),
    ("The image shows: ...", ("The image shows: ...", "")),  # removing it would leave no word
], ids=["image-shows", "photo-depicts", "is-a-photograph-of", "image-is-a", "this-is-a-picture-of", "we-can-see",
        "there-are", "in-the-image-comma", "a-photo-of", "chat-tokens-role", "role-colon-whitespace",
        "near-images-plural", "near-photographer", "near-style-kept", "near-close-up-kept", "near-image-of-saint",
        "near-user-interface", "near-system-of", "opening-only-kept"])
def test_clean(raw, expected):
    assert HYGIENE.clean(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("<|im_start|>assistant\nThe image shows a red double-decker bus crossing a stone bridge on a cloudy day."
     "<|im_end|>",
     ("A red double-decker bus crossing a stone bridge on a cloudy day.", "The image shows ")),
    ("In this image, we can see a golden retriever lying on a wooden floor next to a blue ball.",
     ("A golden retriever lying on a wooden floor next to a blue ball.", "In this image, we can see ")),
    ("Certainly! Here is a detailed description of the image:\n\nThe photograph captures a quiet fishing harbour at "
     "dusk. Small boats are moored along a stone quay.",
     ("A quiet fishing harbour at dusk. Small boats are moored along a stone quay.",
      "Certainly! Here is a detailed description of the image: The photograph captures ")),
    ("The image features a modern kitchen with white cabinets, a marble island and pendant lights.",
     ("A modern kitchen with white cabinets, a marble island and pendant lights.", "The image features ")),
    ("Red double-decker bus<|im_end|>", ("Red double-decker bus", "")),
], ids=["qwen-short", "we-can-see-long", "preamble-then-opening", "llava-features", "qwen-label"])
def test_clean_realistic_outputs(raw, expected):
    assert HYGIENE.clean(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "<|im_start|><|im_end|>", "<|im_start|>assistant\n<|im_end|>", " ... "],
                         ids=["empty", "spaces", "only-special-tokens", "only-role", "only-punctuation"])
def test_empty(raw):
    text, _ = HYGIENE.clean(raw)
    assert flags_of("long", text, hit_limit=True) == ["empty"]  # nothing else is judged on no text


@pytest.mark.parametrize(("text", "flagged"), [
    ("I'm sorry, I can't describe this image.", True),
    ("I’m sorry.", True),
    ("I am unable to identify the person in this picture.", True),
    ("I can’t provide a description of this person’s face.", True),
    ("As an AI, I do not have eyes.", True),
    ("There is no image attached to your message.", True),
    ("I don't see an image in your message.", True),
    ("Unable to determine.", True),
    ("N/A", True),
    ("None.", True),
    ("unknown", True),
    ("No caption", True),
    ("Not sure.", True),
    ("A sorry-looking dog sits in the rain.", False),
    ("A neon sign reads I can see clearly now.", False),
    ("Unknown soldier's grave in a military cemetery.", False),
    ("None of the chairs in the cafe are taken.", False),
    ("A television screen showing no image, only static.", False),
], ids=["sorry", "sorry-curly", "unable-identify", "cannot-provide-curly", "as-an-ai", "no-image", "dont-see",
        "unable-headless", "n-a", "none", "unknown", "no-caption", "not-sure", "near-sorry-looking", "near-i-can-see",
        "near-unknown-soldier", "near-none-of", "near-no-image-on-screen"])
def test_refusal(text, flagged):
    assert ("refusal" in flags_of("short", text)) is flagged


@pytest.mark.parametrize(("text", "flagged"), [
    ("the cat the cat the cat the cat the cat the cat", True),
    ("A dog, a dog, a dog, a dog, a dog, a dog, a dog.", True),  # punctuation does not hide a loop
    ("red red red red blue blue blue blue green green green green", True),  # few distinct words, no trigram thrice
    ("A brown dog runs across a green field toward its owner at sunset.", False),  # 13 words, none repeated
    ("the cat the cat the cat the cat", False),  # a loop, but under 12 words
], ids=["loop", "loop-with-punctuation", "few-distinct", "near-12-words-plain", "near-short-loop"])
def test_degenerate(text, flagged):
    assert ("degenerate" in flags_of("medium", text)) is flagged


@pytest.mark.parametrize(("hit_limit", "expected"), [(True, ["truncated"]), (False, [])], ids=["hit-limit", "ended"])
def test_truncated(hit_limit, expected):
    assert flags_of("short", "A red bus on a bridge", hit_limit) == expected


@pytest.mark.parametrize(("text", "flagged"), [
    ("Ein roter Doppeldeckerbus fährt über eine Brücke.", True),
    ("Un chien noir court sur la plage au coucher du soleil.", True),
    (DRIFT, True),  # drifts into German at the end, where the text as a whole reads as English
    (LONG, False),
    ("Roter Bus", False),  # too few words to judge
    ("A woman sits at a café terrace, enjoying a croissant with a certain joie de vivre.", False),
    ("A golden retriever is lying on a wooden floor next to a blue ball.", False),
    ("A dog runs on the beach", False),
], ids=["german", "french", "drift-at-end", "near-long-english", "near-short-label", "near-french-loanwords",
        "near-english", "near-4-words"])
def test_language(text, flagged):
    assert ("language" in flags_of("medium", text)) is flagged


def test_language_reads_both_ends_of_a_long_text():
    assert HYGIENE.language_of(DRIFT)[0] == "en"  # so the drift test above needs the windows


def test_language_rule_switched_off_and_thresholds():
    german = "Ein roter Doppeldeckerbus fährt über eine Brücke."
    assert Hygiene(language="").flags({"short": german}, {})["short"] == []
    assert Hygiene(language="de").flags({"short": german}, {})["short"] == []
    assert Hygiene(min_language_words=10).flags({"short": german}, {})["short"] == []
    code, probability = HYGIENE.language_of(german)
    assert code == "de" and 0.9 <= probability <= 1.0
    assert Hygiene(min_language_confidence=min(1.0, probability + 1e-3)).flags({"short": german}, {})["short"] == []


@pytest.mark.parametrize(("label", "long", "flagged"), [
    ("mountain lake", BUS, True),
    ("The one", BUS, True),  # no content word at all
    ("red bus", BUS, False),
    ("Dogs", "A dog sleeps on a rug by the fire.", False),
    ("Buses", "A bus waits at a stop.", False),
    ("Puppies", "A brown puppy chews a shoe.", False),
    ("Men", "A man in a suit reads a newspaper.", False),
    ("mountain lake", "", False),  # the long is empty: only its own rule
], ids=["unrelated", "no-content-word", "near-shared-word", "near-plural", "near-plural-es", "near-plural-ies",
        "near-irregular-plural", "near-long-empty"])
def test_label_unrelated(label, long, flagged):
    found = HYGIENE.flags({"label": label, "long": long}, {})
    assert ("label_unrelated" in found["label"]) is flagged
    assert "label_unrelated" not in found["long"]


@pytest.mark.parametrize(("short", "long", "flagged"), [
    ("A red bus with many passengers crosses a long stone bridge.", "A red bus on a bridge.", True),
    ("A red bus on a bridge.", "A red bus crosses a bridge.", False),  # fewer words
    ("A red bus crosses a bridge.", "A red bus crosses a bridge.", False),  # as many words
    ("A red bus crosses a bridge.", "", False),
], ids=["longer", "near-shorter", "near-equal", "near-long-empty"])
def test_short_longer(short, long, flagged):
    found = HYGIENE.flags({"short": short, "long": long}, {})
    assert ("short_longer" in found["short"]) is flagged
    assert "short_longer" not in found["long"]


def test_flags_follow_rules_order_and_skip_missing_levels():
    texts = {"label": "mountain lake", "short": "I'm sorry, " + "the cat " * 8, "long": "A red bus on a bridge."}
    found = HYGIENE.flags(texts, {"short": True})
    assert found == {"label": ["label_unrelated"], "short": ["refusal", "degenerate", "truncated", "short_longer"],
                     "long": []}
    assert list(HYGIENE.flags({"medium": "A cat."}, {})) == ["medium"]  # a GPIC record has one level
    assert set(RULES) >= {rule for rules in found.values() for rule in rules}
    assert RULES[-1] == "mismatch"


def test_from_config():
    assert Hygiene.from_config(None) == Hygiene.from_config({}) == Hygiene()
    assert Hygiene().stock_openings == STOCK_OPENINGS and Hygiene().refusals == REFUSALS
    custom = Hygiene.from_config({"stock_openings": [r"behold[,:]? "], "refusals": [r"\bnope\b"], "language": "de",
                                  "min_language_words": 2, "min_language_confidence": 0.5})
    assert custom.stock_openings == (r"behold[,:]? ",) and custom.language == "de"
    assert custom.clean("Behold, a red bus.") == ("A red bus.", "Behold, ")
    assert custom.clean("The image shows a red bus.") == ("The image shows a red bus.", "")
    assert custom.flags({"short": "Nope, a cat."}, {})["short"] == ["refusal"]
    assert custom.flags({"short": "A red bus crosses a stone bridge over a river."}, {})["short"] == ["language"]
    with pytest.raises(ValueError, match=r"\(unclosed"):
        Hygiene.from_config({"refusals": [r"\bfine\b", "(unclosed"]})


def test_person_counts():
    counts = person_counts("A man and a WOMAN'S child watch people; she holds a baby. A man-made old-fashioned dam.")
    assert counts == Counter({"gender": 3, "age": 2, "people": 1})
    assert person_counts("A red bus on a bridge.") == Counter()
    assert {"gender", "age", "people"} <= set(PERSON_TERMS)


def test_tokens_and_openings():
    assert words('A dog, a "Dog". — sorry-looking dog\'s') == ["a", "dog", "a", "dog", "sorry-looking", "dog's"]
    assert words("一只狗在跑") == ["一", "只", "狗", "在", "跑"]  # Chinese has no spaces: a character is a word
    assert ngrams(["a", "b", "c", "d"], 3) == [("a", "b", "c"), ("b", "c", "d")]
    assert ngrams(["a", "b"], 3) == []
    assert opening("The image shows, in detail, a bus.") == "the image shows"
    assert opening("A cat.", 5) == "a cat"


def test_chinese_script_is_another_language_whatever_the_identifier_s_confidence():
    """py3langid gives short Chinese captions 0.65 to 0.93: the script itself decides."""
    short_chinese = "一只狗在海滩上奔跑"
    assert Hygiene()._text_flags(short_chinese, words(short_chinese), False) == ["language"]
    assert "language" not in Hygiene(language="zh")._text_flags(short_chinese, words(short_chinese), False)
    mixed = "A red lantern with the characters 福 and 春 hangs above the door of a shop."
    assert "language" not in Hygiene()._text_flags(mixed, words(mixed), False)
