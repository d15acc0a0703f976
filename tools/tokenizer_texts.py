"""Deterministic texts for the tokenizer tests and benchmark.

* ``bench_captions(n)``: caption-like texts drawn from a wide vocabulary (about 30,000 English
  words: the whole-word entries of CLIP's own vocabulary), with a Zipf-like word frequency as in
  real captions, some capitals, numbers, punctuation and a share of accented words and emoji.
* ``tokenizer_corpus()``: at least 2,000 strings covering what tokenizers get wrong: accents, CJK,
  Arabic, Devanagari, emoji, mojibake ftfy repairs, HTML entities, numbers, punctuation runs,
  contractions, texts far over 77 tokens, odd whitespace, control characters, the empty string and
  literal special tokens.
"""

from __future__ import annotations

import functools
import random

from clip_core.bpe_vocab import openai_vocab

_TEMPLATES = [
    "a photo of {a} {n}",
    "{A} {n} {p} the {n}",
    "a close-up of {a} {n} with {a} {n}",
    "{n} and {n} {p} {a} {n}",
    "an image showing {num} {n}s {p} the {n}.",
    "{A} {n}, {a} {n} and {a} {n} {p} a {n}",
    "there's {a} {n} {p} the {n}'s {n}",
    "this is a picture of my {n}!",
    "{n} {n} {n}",
    "{A} {n} that should've been {a}",
    "the {n} {p} {a} {n} at {num}:{num2} pm",
    "a {a} {n} ({a}) -- {n}",
]
_PREPOSITIONS = ["on", "in", "under", "next to", "behind", "near", "with", "over", "beside", "inside"]
_ACCENTED = [
    "café",
    "naïve",
    "jalapeño",
    "crème brûlée",
    "façade",
    "résumé",
    "München",
    "São Paulo",
    "Zürich",
    "piñata",
]
_EMOJI = ["🐱", "🌅", "🚲", "❤️", "👍🏽", "🇫🇷", "😂"]


@functools.lru_cache(maxsize=1)
def caption_words() -> tuple[str, ...]:
    """Whole English-looking words of CLIP's vocabulary, in merge order (roughly most frequent first)."""
    encoder, _ = openai_vocab()
    words = []
    for token in sorted(encoder, key=encoder.get):
        if token.endswith("</w>"):
            word = token[:-4]
            if len(word) >= 3 and word.isascii() and word.isalpha():
                words.append(word)
    return tuple(words)


def _zipf_word(rng: random.Random, words) -> str:
    # Half the draws heavy-tailed over the whole list (a few common words, a long tail of rare ones,
    # like caption text), half uniform over the 20,000 most frequent; the first 100 entries are
    # mostly function words and suffixes, left to the templates.
    if rng.random() < 0.5:
        rank = int(rng.paretovariate(0.4)) - 1
    else:
        rank = rng.randrange(20_000)
    return words[100 + rank % (len(words) - 100)]


def bench_captions(n: int = 10_000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = caption_words()
    out = []
    for _ in range(n):
        template = rng.choice(_TEMPLATES)
        caption = template.format_map(_Filler(rng, words))
        roll = rng.random()
        if roll < 0.05:
            caption += " " + rng.choice(_ACCENTED)
        elif roll < 0.08:
            caption += " " + rng.choice(_EMOJI)
        elif roll < 0.30:
            caption = caption.capitalize()
        out.append(caption)
    return out


class _Filler(dict):
    def __init__(self, rng, words):
        super().__init__()
        self.rng, self.words = rng, words

    def __missing__(self, key):
        rng = self.rng
        if key == "n":
            return _zipf_word(rng, self.words)
        if key in ("a", "A"):
            word = _zipf_word(rng, self.words)
            return word.upper() if key == "A" and rng.random() < 0.1 else word
        if key == "p":
            return rng.choice(_PREPOSITIONS)
        if key == "num":
            return str(rng.randint(1, 12))
        if key == "num2":
            return f"{rng.randint(0, 59):02d}"
        raise KeyError(key)


# ---------------------------------------------------------------------------------------------------
_PIECES = {
    "plain": [
        "a photo of a dog",
        "Two cats sleeping on a red sofa",
        "A MAN RIDING A HORSE",
        "the quick brown fox",
    ],
    "accents": [
        "Café au lait",
        "naïve résumé",
        "Ærøskøbing",
        "Crème Brûlée",
        "e\u0301tude",
        "ÀÉÎÕÜ",
        "İstanbul ıi",
    ],
    "cjk": [
        "東京の夜景",
        "北京烤鸭",
        "한국어 텍스트",
        "ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
        "日本語とEnglish",
        "𠀀𪜀",
    ],
    "arabic": ["قطة على الأريكة", "مرحبا بالعالم", "عربي 123"],
    "devanagari": ["नमस्ते दुनिया", "हिन्दी पाठ", "क्षत्रिय"],
    "greek": ["ΟΔΟΣ", "Σίσυφος ΣΟΦΟΣ", "λόγος"],
    "emoji": ["🐱🐶", "I ❤️ NY", "👍🏽 great", "🇫🇷🇩🇪", "👨‍👩‍👧", "☕️ time"],
    "mojibake": [
        "Ã©tÃ©",
        "doesnâ€™t",
        "cafÃ©",
        "Ã¼ber",
        "â€œquotedâ€\x9d",
        "voilÃ\xa0 le travail",
        "Ã\xa0 la",
    ],
    "html": [
        "&amp;",
        "fish &amp; chips",
        "&lt;b&gt;bold&lt;/b&gt;",
        "&quot;hi&quot;",
        "&amp;amp;",
        "&#39;s",
        "&eacute;",
        "<b>&amp;</b>",
        "a & b",
        "&nbsp;x",
        "&#128512;",
    ],
    "numbers": ["12345", "3.14159", "1,000,000", "٣٤٥", "१२३", "½ ²", "Ⅻ", "0x1F", "2nd 3rd"],
    "punct": [
        "!!!",
        "...",
        "?!?!",
        "--->",
        "(a)[b]{c}",
        "a.b.c",
        "¿qué?",
        "«guillemets»",
        "“curly” ‘quotes’",
        "a—b–c",
        "#hashtag @user",
        "~!@#$%^*()_+",
        "'''",
        "''s",
        "!'s",
    ],
    "apostrophes": [
        "should've",
        "I'm",
        "you'll",
        "he'd",
        "it's",
        "don't",
        "they're",
        "SHOULD'VE",
        "It'S",
        "o'clock",
        "rock 'n' roll",
        "'tis",
        "dogs'",
    ],
    "whitespace": [
        "  leading",
        "trailing  ",
        "a\tb",
        "a\nb",
        "a\r\nb",
        "a\u00a0b",
        "a\u2003b",
        "a\u3000b",
        "a\u200bb",
        "a\x0bb",
        "a\x0cb",
        "a\x1cb",
        "a\x85b",
        "a\u2028b",
        " \t\n ",
    ],
    "control": ["a\x00b", "a\x07b", "\x1b[31mred\x1b[0m", "a\x7fb", "a\x9fb", "a\ufffdb", "\ufeffbom"],
    "specials": [
        "<|startoftext|>",
        "<|endoftext|>",
        "a <|endoftext|> b",
        "x<|endoftext|>y",
        "<|ENDOFTEXT|>",
        "!!<|endoftext|>",
        "!!<|EndOfText|>",
        "<start_of_text>",
        "<end_of_text>x",
        "<|endoftext|><|startoftext|>",
        "<|endof",
    ],
    "empty": [""],
}


def tokenizer_corpus(seed: int = 1) -> list[str]:
    """Every piece on its own, every pair of categories mixed, long texts, and random captions."""
    rng = random.Random(seed)
    pieces = [p for group in _PIECES.values() for p in group]
    corpus = list(pieces)
    names = list(_PIECES)
    for _ in range(1000):
        a, b = rng.sample(names, 2)
        sep = rng.choice([" ", "", "  ", "\t", ", ", "\n"])
        corpus.append(rng.choice(_PIECES[a]) + sep + rng.choice(_PIECES[b]))
    for _ in range(100):
        corpus.append(" ".join(rng.choice(pieces) for _ in range(rng.randint(20, 60))))  # far over 77 tokens
    for _ in range(20):
        corpus.append(rng.choice(["a", "ab", "x!", "1"]) * rng.randint(40, 200))
    corpus += bench_captions(1000, seed=seed)
    return corpus
