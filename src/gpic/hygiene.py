"""Caption hygiene: the rules a generated caption is cleaned and checked by.

Every caption of the corpus comes from one model, so its habits are the corpus's habits: stock openings ("The image
shows ...") that teach a text-to-image model nothing, refusals and non-answers, chat-template artefacts, loops, another
language, levels that contradict each other. `Hygiene.clean` removes what can be removed without losing meaning (the
stage keeps the raw text beside the clean one); `Hygiene.flags` records every other finding as a rule name per level,
and the caption stage's `caption.on_flag` decides what each rule does: keep, recaption or drop. The audit of a corpus's
captions counts with the same tokens (`words`, `ngrams`, `opening`, `person_counts`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

# "mismatch" is decided by the agreement scorer, not here: listed so that config and docs have one list of rule names
RULES: tuple[str, ...] = ("empty", "refusal", "degenerate", "truncated", "language", "label_unrelated", "short_longer",
                          "mismatch")

_IMG = r"(?:image|photo|photograph|picture)"
_SHOWS = r"(?:shows|depicts|features|captures|displays|presents|showcases|portrays|illustrates)"
# Case-insensitive, matched at the start of the whitespace-collapsed text, each with its trailing separator. Only
# openings that say nothing about the picture: "A black and white photo of" (style) or "A close-up of" (framing) stay.
STOCK_OPENINGS: tuple[str, ...] = (
    rf"(?:the|this) {_IMG} {_SHOWS}[,:]? ",  # The image shows / This photo depicts / The picture features
    rf"(?:the|this) {_IMG} is (?:of|an? {_IMG} of) ",  # The image is a photograph of / This image is of
    rf"(?:the|this) {_IMG} is (?=(?:an?|the) )",  # This image is a close-up of ... -> "A close-up of ..."
    rf"this is (?:an? )?{_IMG} of ",  # This is an image of / This is a picture of
    rf"in (?:this|the) {_IMG},? (?:we|you|i) can see ",  # In this image we can see
    rf"in (?:this|the) {_IMG},? there (?:is|are) ",  # In the image, there are
    rf"in (?:this|the) {_IMG}, ",  # In the image, a man ... (the comma keeps "In the image of a saint" as is)
    rf"an? {_IMG} of ",  # A photo of / An image of / A picture of
    r"(?:(?:sure|certainly|of course)[!.,]? )?here(?: is|['’]s) (?:an? |the )?(?:\w+ )?(?:description|caption)"
    r"(?: (?:of|for) (?:the|this) image)?[:.] ",  # Certainly! Here is a detailed description of the image:
)
_A = "['’]"  # models write both apostrophes
# Case-insensitive, searched anywhere in the clean text; the non-answers count only as the whole text.
REFUSALS: tuple[str, ...] = (
    rf"\bI(?:{_A}m| am) sorry\b",
    rf"\bI(?: cannot| can not| can{_A}t|(?:{_A}m| am) (?:unable|not able) to) (?:see|view|describe|identify|determine"
    r"|provide|help|assist|process|access|recogni[sz]e)\b",
    r"\bas an AI\b",
    rf"\bI (?:don{_A}t|do not) see (?:an|any) image\b",
    r"^there (?:is|was) no image\b",
    r"^unable to (?:describe|determine|identify)\b",
    r"^\W*(?:none|n/?a|unknown|no caption|not sure)\W*$",
)

# What the audit counts, never judges: how often captions describe people by gender or age.
PERSON_TERMS: dict[str, tuple[str, ...]] = {
    "gender": ("man", "men", "woman", "women", "boy", "boys", "girl", "girls", "male", "males", "female", "females",
               "gentleman", "gentlemen", "lady", "ladies", "guy", "guys", "he", "she", "his", "her", "him", "hers",
               "himself", "herself"),
    "age": ("child", "children", "kid", "kids", "baby", "babies", "infant", "infants", "toddler", "toddlers",
            "teenager", "teenagers", "teen", "teens", "adult", "adults", "elderly", "old", "young"),
    "people": ("person", "persons", "people", "crowd", "crowds"),
}
_PERSON_GROUP = {term: group for group, terms in PERSON_TERMS.items() for term in terms}

# Words a label and its long caption share without being about the same thing.
_STOP_WORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "of", "in", "on", "at", "to", "from", "by", "for", "with", "without",
    "into", "onto", "over", "under", "above", "below", "between", "among", "through", "across", "along", "around",
    "behind", "beside", "near", "next", "against", "during", "before", "after", "while", "as", "than", "then", "so",
    "such", "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "having", "do", "does",
    "did", "it", "its", "this", "that", "these", "those", "there", "here", "he", "she", "they", "them", "their", "his",
    "her", "him", "we", "you", "your", "our", "us", "i", "me", "my", "some", "any", "all", "each", "every", "both",
    "few", "many", "much", "more", "most", "other", "another", "same", "own", "very", "just", "also", "only", "not",
    "no", "yes", "too", "can", "could", "will", "would", "may", "might", "shall", "should", "must", "which", "who",
    "whom", "whose", "what", "where", "when", "why", "how", "up", "down", "out", "off", "about", "image", "images",
    "photo", "photos", "photograph", "photographs", "picture", "pictures", "shows", "show", "showing", "depicts",
    "depicting", "features", "featuring", "captures", "capturing", "displays", "displaying", "visible", "appears",
    "seen", "view", "scene", "background", "foreground"
})
_IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "person", "feet": "foot",
              "teeth": "tooth", "mice": "mouse", "geese": "goose", "leaves": "leaf", "knives": "knife"}

# Scripts written without spaces: each character counts as a word, so a caption in Chinese is a text of many words.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}](?:[^\s{_CJK}]*[^\W_{_CJK}])?")  # punctuation around a word: not in it
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_ALPHA = re.compile(r"[^\W\d_]+")
_ALPHA_COMPOUND = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")  # "man-made" is one word, not a man
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>")
# the role a chat template writes before the answer: only with its newline or colon, so "User interface of ..." stays
_ROLE = re.compile(r"^\s*(?:assistant|user|system)(?:\s*:|[ \t]*\n)\s*", re.IGNORECASE)
_LANGUAGE_WINDOW = 200  # characters read at each end of a longer text: identification costs ~0.3 µs per character


def words(text: str) -> list[str]:
    """Lower-cased word tokens as the rules and the audit count them: whitespace-separated, without the punctuation
    around them (so "dog," and "dog" are one word), one per character in Chinese and Japanese."""
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(tokens[i:] for i in range(n))))


def opening(text: str, n: int = 3) -> str:
    """The first n words, lower-cased: what the audit groups openings by to find the model's stock phrases."""
    return " ".join(words(text)[:n])


def person_counts(text: str) -> Counter:
    """Occurrences of each PERSON_TERMS group in one caption (whole words, case-insensitive)."""
    return Counter(group for w in _ALPHA_COMPOUND.findall(text.lower()) if (group := _PERSON_GROUP.get(w)))


def _content_words(text: str) -> set[str]:
    """Content words with their possible singulars, so "dogs" meets "dog" and "buses" meets "bus"."""
    found = set()
    for w in set(_ALPHA.findall(text.lower())) - _STOP_WORDS:
        if len(w) < 2:
            continue
        found.add(_IRREGULAR.get(w, w))
        if w.endswith("ies"):
            found.add(w[:-3] + "y")
        elif w.endswith("s") and not w.endswith("ss"):
            found.update((w[:-1], w[:-2]) if w.endswith("es") else (w[:-1],))
    return found


def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as e:
            raise ValueError(f"caption hygiene: bad regular expression {pattern!r}: {e}") from None
    return tuple(compiled)


@cache
def _identifier():
    """py3langid's identifier, loaded once per process on first use (half a second)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@dataclass(frozen=True)
class Hygiene:
    stock_openings: tuple[str, ...] = STOCK_OPENINGS
    refusals: tuple[str, ...] = REFUSALS
    language: str = "en"  # ISO 639-1 the captions should be in; "" switches the language rule off
    min_language_words: int = 4  # language identification is unreliable on a few words
    min_language_confidence: float = 0.9  # flag only when the identifier is at least this sure of another language
    _openings: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)
    _refusals: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("stock_openings", "refusals"):  # config gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "_openings", _compile(self.stock_openings))
        object.__setattr__(self, "_refusals", _compile(self.refusals))

    @classmethod
    def from_config(cls, cfg: dict | None) -> Hygiene:
        """From `caption.hygiene`: keys as the field names, missing keys take the defaults."""
        return cls(**(cfg or {}))

    def clean(self, raw: str) -> tuple[str, str]:
        """(clean text, stock opening removed or ""): chat artefacts stripped (special tokens <|...|>, then a leading
        role name), whitespace collapsed, then stock openings removed until none matches (a preamble such as "Here is a
        description:" often precedes "The image shows"), the longest match first, and the remainder's first letter
        upper-cased. When the removal would leave no word, the text is kept as is."""
        text = " ".join(_ROLE.sub("", _SPECIAL_TOKENS.sub(" ", raw)).split())
        rest = text
        while end := self._opening_end(rest):
            rest = rest[end:]
        if rest == text or not _WORD.search(rest):
            return text, ""
        return rest[0].upper() + rest[1:], text[:len(text) - len(rest)]

    def flags(self, texts: dict[str, str], hit_limit: dict[str, bool]) -> dict[str, list[str]]:
        """Per level of `texts` (clean texts; a GPIC record has one level), the rules it breaks in RULES order. Each
        text alone: empty (no word; an empty text gets nothing else), refusal, degenerate, truncated (the generation hit
        its token budget), language. Across levels, where both are there and not empty: label_unrelated (the label
        shares no content word with the long caption) and short_longer (the short caption has more words than the
        long one)."""
        tokens = {level: words(text) for level, text in texts.items()}
        found = {level: self._text_flags(text, tokens[level], hit_limit.get(level, False))
                 for level, text in texts.items()}
        label, short, long = (tokens.get(level) for level in ("label", "short", "long"))
        if label and long and not _content_words(texts["label"]) & _content_words(texts["long"]):
            found["label"].append("label_unrelated")
        if short and long and len(short) > len(long):
            found["short"].append("short_longer")
        return found

    def language_of(self, text: str) -> tuple[str, float]:
        """(ISO 639-1 code, probability) by py3langid with normalised probabilities."""
        code, probability = _identifier().classify(text)
        return code, float(probability)

    def _opening_end(self, text: str) -> int:
        """Where the longest stock opening at the start of `text` ends (0: none), whatever the order of the patterns."""
        return max((m.end() for p in self._openings if (m := p.match(text))), default=0)

    def _text_flags(self, text: str, tokens: list[str], hit_limit: bool) -> list[str]:
        if not tokens:
            return ["empty"]
        rules = {
            "refusal": any(p.search(text) for p in self._refusals),
            "degenerate": len(tokens) >= 12 and (Counter(ngrams(tokens, 3)).most_common(1)[0][1] >= 3
                                                 or len(set(tokens)) / len(tokens) < 0.3),
            "truncated": hit_limit,
            "language": bool(self.language) and len(tokens) >= self.min_language_words and self._foreign(text),
        }
        return [rule for rule, broken in rules.items() if broken]

    def _foreign(self, text: str) -> bool:
        """Whether another language is confidently identified. A long text is read at both ends only: that bounds the
        cost, and a model that drifts into another language does so towards the end."""
        if self.language not in ("zh", "ja") and len(_CJK_CHAR.findall(text)) > 0.3 * len(text):
            return True  # Chinese or Japanese script: py3langid is often unsure of short Chinese (0.65 to 0.93)
        if len(text) <= 2 * _LANGUAGE_WINDOW:
            ends = (text,)
        else:
            ends = (text[:_LANGUAGE_WINDOW].rsplit(" ", 1)[0], text[-_LANGUAGE_WINDOW:].split(" ", 1)[-1])
        for end in ends:
            code, probability = self.language_of(end)
            if code != self.language and probability >= self.min_language_confidence:
                return True
        return False
