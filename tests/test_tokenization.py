"""CLIPTokenizer / CLIPTokenizerFast against transformers 4.57.6 and open_clip, token for token.

References are built here, independently of clip_core: vocab.json + merges.txt are made from OpenAI's
bpe gz the way transformers' conversion lays them out, then loaded by transformers' own classes.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import os

import ftfy
import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clip_core.bpe_vocab import WordIdsCache
from clip_core.tokenization import _NEEDS_FTFY, CLIPTokenizer, tokenize
from clip_core.tokenization_fast import _NOT_PLAIN_ASCII, _NOT_PYTHON_SAFE, CLIPTokenizerFast
from tools.tokenizer_texts import tokenizer_corpus

transformers = pytest.importorskip("transformers")

GZ = os.path.join(os.path.dirname(__file__), "..", "clip_core", "data", "bpe_simple_vocab_16e6.txt.gz")
OPEN_CLIP_TOKENIZER = os.path.join(
    os.path.dirname(transformers.__file__), "..", "open_clip", "tokenizer.py"
)  # site-packages/open_clip/tokenizer.py
CLIP_SPLIT = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)


# ------------------------------------------------------------------------------------------ fixtures
def _reference_vocab():
    """OpenAI gz -> (vocab, merges) as transformers' vocab.json/merges.txt hold them (no clip_core code)."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    lines = gzip.open(GZ).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref_vocab")
    vocab, merges = _reference_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


@pytest.fixture(scope="module")
def hf_slow(ref_files, tmp_path_factory):
    tok = transformers.CLIPTokenizer(*ref_files, model_max_length=77)
    folder = tmp_path_factory.mktemp("hf_slow")
    tok.save_pretrained(folder)
    return tok, str(folder)


@pytest.fixture(scope="module")
def hf_fast(ref_files, tmp_path_factory):
    tok = transformers.CLIPTokenizerFast(*ref_files, model_max_length=77)
    folder = tmp_path_factory.mktemp("hf_fast")
    tok.save_pretrained(folder)
    assert os.path.isfile(os.path.join(folder, "tokenizer.json"))
    return tok, str(folder)


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    pytest.importorskip("torch")
    path = os.path.normpath(OPEN_CLIP_TOKENIZER)
    if not os.path.isfile(path):
        pytest.skip("open_clip is not installed")
    # Load the module alone: the package __init__ needs torchvision.
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus():
    texts = tokenizer_corpus()
    assert len(set(texts)) >= 2000
    return texts


@pytest.fixture(scope="module")
def slow():
    return CLIPTokenizer()


@pytest.fixture(scope="module")
def fast():
    return CLIPTokenizerFast()


@pytest.fixture(scope="module")
def openai():
    return CLIPTokenizer(mode="openai")


# ------------------------------------------------------------------------------------------ vocabulary
def test_bundled_vocab_is_transformers_layout(slow, fast, ref_files):
    vocab, merges = _reference_vocab()
    assert slow.get_vocab() == vocab
    assert fast.get_vocab() == vocab
    assert [" ".join(m) for m in slow.merges] == merges
    assert slow.vocab_size == len(slow) == 49408 == fast.vocab_size == len(fast)
    assert (slow.bos_token_id, slow.eos_token_id, slow.pad_token_id, slow.unk_token_id) == (
        49406,
        49407,
        49407,
        49407,
    )
    assert CLIPTokenizer(*ref_files).get_vocab() == vocab


# ------------------------------------------------------------------------------------------ corpus parity
def test_slow_equals_transformers_slow(slow, hf_slow, corpus):
    ref, folder = hf_slow
    expected = ref(corpus)["input_ids"]
    assert slow(corpus)["input_ids"] == expected
    # Second pass runs from the word cache; from_pretrained reads the saved folder.
    assert CLIPTokenizer.from_pretrained(folder)(corpus)["input_ids"] == expected
    assert slow(corpus)["input_ids"] == expected
    for text in corpus[::50]:
        assert slow.tokenize(text) == ref.tokenize(text), text


def test_fast_equals_transformers_fast(fast, hf_fast, corpus):
    ref, folder = hf_fast
    expected = ref(corpus)["input_ids"]
    # Both routes are exercised: the Python shortcut for plain ASCII, the library for the rest.
    plain = sum(_NOT_PLAIN_ASCII.search(t) is None for t in corpus)
    assert 1000 < plain < len(corpus) - 300
    assert fast(corpus)["input_ids"] == expected
    loaded = CLIPTokenizerFast.from_pretrained(folder)
    assert loaded._python_path
    assert loaded(corpus)["input_ids"] == expected
    for text in corpus[::50]:
        assert fast.tokenize(text) == ref.tokenize(text), text


def test_fast_without_python_shortcut_is_the_library(fast, hf_fast, corpus):
    plain_only = CLIPTokenizerFast()
    plain_only._python_path = False
    assert plain_only(corpus[:400])["input_ids"] == hf_fast[0](corpus[:400])["input_ids"]


@pytest.mark.parametrize("make", [CLIPTokenizer, CLIPTokenizerFast], ids=["slow", "fast"])
def test_word_cache_bound_keeps_ids_exact(make, hf_slow, hf_fast, corpus):
    """A full word cache starts afresh mid-stream; batches that overflow it still get exact ids."""
    tok = make()
    tok._word_ids = WordIdsCache(tok._learn, max_words=60)
    ref = (hf_slow if make is CLIPTokenizer else hf_fast)[0]
    texts = corpus[:600]
    largest_batch = 0
    for batch in (texts[:40], texts[40:100], texts[:600], texts[100:140], texts[:10], texts[200:260]):
        assert tok(batch)["input_ids"] == ref(batch)["input_ids"]
        unbounded = make()
        unbounded(batch)  # its cache: every distinct word (and special id) of this batch
        largest_batch = max(largest_batch, len(unbounded._word_ids))
        # Over the bound only by what one batch alone needs (its words are learned together).
        assert len(tok._word_ids) <= max(60, largest_batch)
    everything = make()
    everything(texts)
    assert len(everything._word_ids) > 2 * 60  # so the bound was really hit, more than once


def test_every_ascii_character(slow, fast, hf_slow, hf_fast, openai, open_clip_tokenizer):
    """Every ASCII character in the positions the shortcuts care about (whitespace, controls, '&')."""
    texts = []
    for c in map(chr, range(128)):
        texts += [c, f"a{c}b", f"A{c}{c} 1{c}", f"{c}'s x{c}<|endoftext|>{c}", f"&amp;{c}", f" {c}\t{c}\n"]
    assert slow(texts)["input_ids"] == hf_slow[0](texts)["input_ids"]
    assert fast(texts)["input_ids"] == hf_fast[0](texts)["input_ids"]
    np.testing.assert_array_equal(tokenize(texts), open_clip_tokenizer.tokenize(texts).numpy())


PYTHON_SAFE_CHARS = [
    c for c in map(chr, range(0x20000)) if _NOT_PYTHON_SAFE.search(c) is None and _NOT_PLAIN_ASCII.search(c)
]


def test_fast_unicode_shortcut_every_code_point():
    """Every non-ASCII character the fast tokenizer handles in Python, against the library itself."""
    assert len(PYTHON_SAFE_CHARS) > 3000
    texts = []
    for c in PYTHON_SAFE_CHARS:
        texts += [f"a{c}b {c}{c}", f"!{c}! x{c}'s 1{c}2", f"É{c}ÿ <|endoftext|>{c}"]
    library = CLIPTokenizerFast()
    library._python_path = False  # every text through tokenizers (equal to transformers: tested above)
    assert CLIPTokenizerFast()(texts)["input_ids"] == library(texts)["input_ids"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(PYTHON_SAFE_CHARS + list(" aZ'!1<|>")), max_size=30))
def test_fast_unicode_shortcut_mixtures(text):
    assert _FAST(text)["input_ids"] == _LIBRARY(text)["input_ids"]


_FAST, _LIBRARY = CLIPTokenizerFast(), CLIPTokenizerFast()
_LIBRARY._python_path = False


def test_openai_mode_equals_open_clip(openai, open_clip_tokenizer, corpus):
    expected = open_clip_tokenizer.tokenize(corpus).numpy()
    np.testing.assert_array_equal(tokenize(corpus), expected)
    got = openai(corpus, return_tensors="np")
    np.testing.assert_array_equal(got["input_ids"], expected)
    assert got["input_ids"].dtype == np.int64
    # "!" is id 0, the pad id: the mask comes from lengths, not from ids != 0.
    enc = openai(["hi !", "!!!"], return_tensors="np")
    assert enc["attention_mask"].sum(1).tolist() == [4, 3]
    np.testing.assert_array_equal(
        tokenize(corpus[:50], context_length=20), open_clip_tokenizer.tokenize(corpus[:50], 20).numpy()
    )


def test_openai_truncate_false_raises_on_long_text():
    with pytest.raises(ValueError, match="truncation=True"):
        tokenize(["a " * 100], truncate=False)
    assert tokenize(["a photo"], truncate=False).shape == (1, 77)


def test_ftfy_shortcut_is_sound(corpus):
    """Texts the slow tokenizer skips ftfy on are left unchanged by ftfy and by html.unescape."""
    skipped = [t for t in corpus if _NEEDS_FTFY.search(t) is None]
    assert len(skipped) > 900
    for text in skipped:
        assert ftfy.fix_text(text) == text
        assert html.unescape(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([chr(c) for c in [9, 10, *range(0x20, 0x7F)] if c != ord("&")])))
def test_ftfy_shortcut_is_sound_hypothesis(text):
    assert _NEEDS_FTFY.search(text) is None
    assert ftfy.fix_text(text) == text


def test_named_disagreements_between_references(slow, fast, openai, hf_slow, hf_fast, open_clip_tokenizer):
    """Where the references differ, each of ours follows its own reference; the reason is named per case."""
    hs, hf = hf_slow[0], hf_fast[0]

    def differ(text):
        a, b = hs(text)["input_ids"], hf(text)["input_ids"]
        assert slow(text)["input_ids"] == a and fast(text)["input_ids"] == b
        return a != b

    assert differ("cafÃ©")  # mojibake: the slow tokenizer runs ftfy, the fast one does not
    assert differ("&amp;")  # ftfy unescapes a lone HTML entity; the fast tokenizer keeps it
    assert differ("“curly”")  # ftfy uncurls quotes
    assert differ("ΟΔΟΣ")  # Python lowercases a final Σ to ς; Rust's per-character lowercase gives σ
    assert differ("ｆｕｌｌ")  # ftfy folds full-width letters; NFC does not
    # transformers' slow tokenizer cuts out special tokens before cleaning, case-sensitively; the
    # fast one after lowercasing. So '!!<|EndOfText|>' keeps 49407 only in the fast tokenizer.
    assert differ("!!<|EndOfText|>")
    # open_clip unescapes HTML twice and names its special literals <end_of_text>.
    # ftfy leaves entities alone in a line that has a '<' (it may be HTML); open_clip unescapes anyway.
    texts = ["<b>&amp;", "<|endoftext|>", "<end_of_text>"]
    oc = open_clip_tokenizer.tokenize(texts).numpy()
    np.testing.assert_array_equal(openai(texts, return_tensors="np")["input_ids"], oc)
    assert oc[0, :6].tolist() == hs("<b>&")["input_ids"] != hs("<b>&amp;")["input_ids"]
    assert (
        oc[1, 1] != 49407 and oc[2, 1] == 49407 and hs("<|endoftext|>")["input_ids"] == [49406, 49407, 49407]
    )


# ------------------------------------------------------------------------------------------ call API
CALLS = [
    {},
    {"padding": True},
    {"padding": "longest", "return_tensors": "np"},
    {"padding": "max_length", "truncation": True, "return_tensors": "np"},
    {"padding": "max_length", "max_length": 16, "truncation": True, "return_tensors": "np"},
    {"max_length": 10},
    {"truncation": True},
    {"padding": True, "return_attention_mask": False},
    {"add_special_tokens": False, "padding": True, "max_length": 12, "truncation": True},
    {"padding": True, "return_tensors": "pt"},
    {"padding": "max_length", "max_length": 12},  # longer rows stay longer (ragged lists), as in transformers
    {"padding": True, "pad_to_multiple_of": 8, "return_tensors": "np", "truncation": True, "max_length": 16},
    {"padding": True, "return_token_type_ids": True, "return_length": True},
]


@pytest.mark.parametrize("kwargs", CALLS, ids=[str(k) for k in CALLS])
def test_call_api_matches_transformers(kwargs, slow, fast, hf_slow, hf_fast, corpus):
    texts = corpus[:40] + [corpus[-1]]
    if kwargs.get("return_tensors") is None or kwargs.get("truncation"):
        texts.append(
            "a " * 120
        )  # over the context: with tensors and no truncation ours raises (tested below)
    for ours, ref in ((slow, hf_slow[0]), (fast, hf_fast[0])):
        got, want = ours(texts, **kwargs), ref(texts, **kwargs)
        assert sorted(got.keys()) == sorted(want.keys())
        for key in want:
            if kwargs.get("return_tensors") == "pt":
                assert str(got[key].dtype) == "torch.int64"
                np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
            elif kwargs.get("return_tensors") == "np":
                np.testing.assert_array_equal(got[key], want[key])
            else:
                assert got[key] == want[key], key
        assert got.input_ids is got["input_ids"]
    single = slow("a photo of a cat")
    assert single == hf_slow[0]("a photo of a cat").data
    assert fast("a photo", return_tensors="np")["input_ids"].shape == (1, 4)


@pytest.mark.parametrize(
    "framework", ["jax"]
)  # "tf" works the same way but its import alone takes ~20 s here
def test_other_framework_tensors(framework, slow):
    module = pytest.importorskip({"jax": "jax.numpy", "tf": "tensorflow"}[framework])
    enc = slow(["a photo", "a photo of a cat"], padding=True, return_tensors=framework)
    want = slow(["a photo", "a photo of a cat"], padding=True, return_tensors="np")
    for key in want:
        assert np.asarray(enc[key]).tolist() == want[key].tolist()
        assert "int64" in str(enc[key].dtype) or (framework == "jax" and "int32" in str(enc[key].dtype))
    del module


def test_helpers_match_transformers(slow, fast, hf_slow, hf_fast):
    ids = slow.encode("a photo of a cat", add_special_tokens=False)
    for ours, ref in ((slow, hf_slow[0]), (fast, hf_fast[0])):
        assert ours.encode("A photo of a Cat!") == ref.encode("A photo of a Cat!")
        assert ours.build_inputs_with_special_tokens(ids) == ref.build_inputs_with_special_tokens(ids)
        assert ours.build_inputs_with_special_tokens(ids, ids[:2]) == ref.build_inputs_with_special_tokens(
            ids, ids[:2]
        )
        # transformers' fast class refuses this form; its slow class defines it.
        assert ours.get_special_tokens_mask(ids) == hf_slow[0].get_special_tokens_mask(ids)
        assert ours.get_special_tokens_mask(ids, ids) == hf_slow[0].get_special_tokens_mask(ids, ids)
        full = ref.encode("a cat")
        assert ours.get_special_tokens_mask(
            full, already_has_special_tokens=True
        ) == ref.get_special_tokens_mask(full, already_has_special_tokens=True)
        assert ours.create_token_type_ids_from_sequences(ids) == ref.create_token_type_ids_from_sequences(ids)
        tokens = ref.convert_ids_to_tokens(full)
        assert ours.convert_ids_to_tokens(full) == tokens
        assert ours.convert_ids_to_tokens(full, skip_special_tokens=True) == ref.convert_ids_to_tokens(
            full, skip_special_tokens=True
        )
        assert ours.convert_tokens_to_ids(tokens) == full
        assert ours.convert_tokens_to_ids("no-such-token") == ref.convert_tokens_to_ids("no-such-token")
        assert ours.convert_ids_to_tokens(320) == ref.convert_ids_to_tokens(320)
        for name in (
            "bos_token",
            "eos_token",
            "pad_token",
            "unk_token",
            "all_special_ids",
            "model_max_length",
        ):
            assert getattr(ours, name) == getattr(ref, name), name


def test_decode_matches_transformers(slow, fast, hf_slow, hf_fast, corpus):
    batch = hf_slow[0](corpus[::40], padding=True)["input_ids"]
    for skip, clean_up in ((False, False), (True, False), (False, True), (True, True)):
        for ours, ref in ((slow, hf_slow[0]), (fast, hf_fast[0])):
            want = ref.batch_decode(batch, skip_special_tokens=skip, clean_up_tokenization_spaces=clean_up)
            assert (
                ours.batch_decode(batch, skip_special_tokens=skip, clean_up_tokenization_spaces=clean_up)
                == want
            )
            assert ours.decode(np.asarray(batch[3]), skip_special_tokens=skip) == ref.decode(
                batch[3], skip_special_tokens=skip
            )


def test_clear_errors(slow, fast, openai):
    for tok in (slow, fast, openai):
        with pytest.raises(ValueError, match="padding"):
            tok("a", padding="to_the_moon")
        with pytest.raises(ValueError, match="truncation"):
            tok("a", truncation="sometimes")
        with pytest.raises(ValueError, match="context of 77"):
            tok("a", padding="max_length", max_length=100)
        with pytest.raises(ValueError, match="return_tensors"):
            tok("a", return_tensors="mx")
        with pytest.raises(ValueError, match=r"text\[1\]"):
            tok(["a", 3])
        with pytest.raises(ValueError, match="not in the vocabulary"):
            tok.decode([10**6])
    with pytest.raises(ValueError, match="text 1 has 102 tokens"):
        slow(["a", "a " * 100], padding=True, return_tensors="np")
    with pytest.raises(ValueError, match="text 1 has 22 tokens, more than max_length=16"):
        fast(["a", "a " * 20], padding="max_length", max_length=16, truncation=False, return_tensors="np")
    with pytest.raises(ValueError, match="pad_to_multiple_of=8"):
        slow("a", padding=True, truncation=True, pad_to_multiple_of=8)  # 77 is no multiple of 8
    with pytest.raises(ValueError, match="mode"):
        CLIPTokenizer(mode="clip")


# ------------------------------------------------------------------------------------------ files
def test_saved_folders_load_in_transformers(tmp_path, slow, fast, hf_slow, hf_fast, corpus):
    texts = corpus[::7]
    slow.save_pretrained(tmp_path / "slow")
    fast.save_pretrained(tmp_path / "fast")
    assert (
        transformers.CLIPTokenizer.from_pretrained(tmp_path / "slow")(texts)["input_ids"]
        == hf_slow[0](texts)["input_ids"]
    )
    hf_from_ours = transformers.CLIPTokenizerFast.from_pretrained(tmp_path / "fast")
    assert hf_from_ours(texts)["input_ids"] == hf_fast[0](texts)["input_ids"]
    assert hf_from_ours.model_max_length == 77
    # Our loaders read our own folders back, and save_vocabulary writes files transformers reads.
    assert (
        CLIPTokenizerFast.from_pretrained(tmp_path / "slow")(texts)["input_ids"]
        == hf_fast[0](texts)["input_ids"]
    )
    os.makedirs(tmp_path / "vocab")
    for tok in (slow, fast):
        files = tok.save_vocabulary(str(tmp_path / "vocab"), filename_prefix="x")
        assert sorted(os.path.basename(f) for f in files) == ["x-merges.txt", "x-vocab.json"]
        reloaded = transformers.CLIPTokenizer(*sorted(files)[::-1])
        assert reloaded(texts)["input_ids"] == hf_slow[0](texts)["input_ids"]
    assert not [f for f in os.listdir(tmp_path / "vocab") if f.startswith(".")]  # no temporary files left


def test_added_tokens_from_config(tmp_path, hf_slow, hf_fast):
    """Textual-inversion style added tokens are cut out like transformers does."""
    for ref, ours_cls in ((hf_slow[0], CLIPTokenizer), (hf_fast[0], CLIPTokenizerFast)):
        ref = type(ref).from_pretrained(hf_slow[1] if ours_cls is CLIPTokenizer else hf_fast[1])
        ref.add_tokens(["<cat-toy>"])
        ref.save_pretrained(tmp_path / ours_cls.__name__)
        ours = ours_cls.from_pretrained(tmp_path / ours_cls.__name__)
        texts = ["a <cat-toy> on a table", "a<cat-toy>b", "plain text"]
        assert ours(texts)["input_ids"] == ref(texts)["input_ids"]
        assert len(ours) == len(ref) == 49409


# ------------------------------------------------------------------------------------------ hypothesis
def _clean_transformers(text):
    return regex.sub(r"\s+", " ", ftfy.fix_text(text)).strip().lower()


def _clean_openai(text):
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def _joined(words, literal_specials):
    """Words joined by one space, as the BPE's '</w>' spaces them; a literal special token is spelled as
    its vocabulary entry, which has no '</w>', so no space follows it (transformers: 'x <|endoftext|>y')."""
    return "".join(literal_specials.get(w, w + " ") for w in words).strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
@example("<|ENDOFTEXT|>0")
@example("a<|endoftext|>b <|startoftext|> c")
@example("<END_OF_TEXT>1 <start_of_text>z")
@example(":<|endoftext|>")
def test_round_trip_arbitrary_unicode(slow, fast, openai, hf_fast, text):
    """decode(encode(x)) is the cleaned, lowercased text with its words (CLIP's split) joined by one space
    (none after a literal special token, as in transformers)."""
    ids = slow.encode(text, add_special_tokens=False)
    specials = {t: t for t in ("<|startoftext|>", "<|endoftext|>")}
    # transformers cuts the special tokens (exact case) out of the raw text, then cleans each piece.
    words = []
    for index, chunk in enumerate(regex.split(r"(<\|startoftext\|>|<\|endoftext\|>)", text)):
        words += [chunk] if index % 2 else CLIP_SPLIT.findall(_clean_transformers(chunk))
    assert slow.decode(ids) == _joined(words, specials)
    oc_ids = openai.encode(text, add_special_tokens=False, padding=False, truncation=False)
    oc_words = regex.findall(
        r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        _clean_openai(text),
        flags=regex.IGNORECASE,
    )
    oc_specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    assert openai.decode(oc_ids) == _joined(oc_words, oc_specials)
    # The fast tokenizer's cleaning is the library's (NFC, whitespace, per-character lowercase): compare ids.
    assert fast.encode(text) == hf_fast[0].encode(text)
    assert fast.decode(fast.encode(text), skip_special_tokens=True) == hf_fast[0].decode(
        hf_fast[0].encode(text), skip_special_tokens=True
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
@example(":<|endoftext|>x<|startoftext|>")
@example("ΣΑΣ &amp;amp; <end_of_text>")
def test_arbitrary_unicode_equals_references(slow, openai, hf_slow, open_clip_tokenizer, text):
    """The corpus parity, on text nobody chose: slow vs transformers' slow, OpenAI mode vs open_clip."""
    assert slow.encode(text) == hf_slow[0].encode(text)
    np.testing.assert_array_equal(
        openai([text], return_tensors="np")["input_ids"], open_clip_tokenizer.tokenize([text]).numpy()
    )
