"""CLIPTokenizerFast: CLIP's tokenizer on the `tokenizers` library, equal to transformers' CLIPTokenizerFast.

The `tokenizers` pipeline (NFC, whitespace runs -> " ", lowercase; CLIP's split regex and byte-level
split; BPE with '</w>') is the reference. It does not run ftfy, so it differs from the slow
tokenizer on mojibake (and, through Rust's per-character lowercasing, on a final capital sigma).

Speed: most captions are plain ASCII. For those, the pipeline's result is reproduced in Python
with a cache of whole words -> ids in front of the library's BPE, and the batch is padded with
numpy; every other text goes to ``Tokenizer.encode_batch``. The shortcut is used only when the
loaded pipeline is the standard CLIP one (checked on load), and the test corpus compares both paths.
"""

from __future__ import annotations

import json
import os
import re as std_re
import tempfile
import unicodedata

import regex

from .bpe_vocab import (
    BOS_TOKEN,
    END_OF_WORD,
    EOS_TOKEN,
    WordIdsCache,
    byte_encode,
    openai_vocab,
    read_vocab_files,
)
from .files import atomic_copy, atomic_write_text
from .tokenization import _CLIPTokenizerBase

_CLIP_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "NFC"},
        {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
        {"type": "Lowercase"},
    ],
}
_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": _CLIP_SPLIT}, "behavior": "Removed", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}

# Texts eligible for the Python path: printable ASCII plus the whitespace both Oniguruma and Python
# read as \s. There NFC is the identity, lowercasing is ASCII's, \p{L} is [a-z] after it, \p{N} is
# [0-9], every byte symbol is the character itself, and GPT-2's byte-level regex never splits a
# piece of CLIP's split further (pieces are a letter run, a digit, a contraction, or a symbol run).
_NOT_PLAIN_ASCII = std_re.compile(r"[^\t\n\x0b\x0c\r\x20-\x7e]")
_ASCII_WORDS = std_re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")
# A second Python route for common non-ASCII caption characters: Latin letters and punctuation
# (U+00A0-U+024F), typographic punctuation, symbols, dingbats and emoji with their joiner and
# variation selector. None of them is a combining mark or has a singleton decomposition, so NFC
# leaves them alone; none is a capital sigma, the one character Python's contextual lower() and
# Rust's per-character lowercase treat differently; all were assigned long before Python's
# Unicode 14 tables. There, Python's `regex` classes agree with Oniguruma's: the test suite checks
# every one of these code points against the library.
_NOT_PYTHON_SAFE = std_re.compile(
    "[^\t\n\x0b\x0c\r\x20-\x7e\u00a0-\u024f\u2010-\u2027\u2030-\u205e\u200d"
    "\u2190-\u21ff\u2600-\u27bf\ufe0f\U0001f300-\U0001faff]"
)
_UNICODE_WORDS = regex.compile(_CLIP_SPLIT)
_SPECIAL_SPLIT = std_re.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")


def _backend_from_vocab(encoder: dict[str, int], merges, unk_token: str, bos_token: str, eos_token: str):
    """The `tokenizers` pipeline transformers builds when it converts CLIP's slow tokenizer."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    backend = Tokenizer(
        models.BPE(
            vocab=dict(encoder),
            merges=[tuple(m) for m in merges],
            unk_token=unk_token,
            continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD,
            fuse_unk=False,
            dropout=None,
        )
    )
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.RobertaProcessing(
        sep=(eos_token, encoder[eos_token]),
        cls=(bos_token, encoder[bos_token]),
        add_prefix_space=False,
        trim_offsets=False,
    )
    specials = list(dict.fromkeys([bos_token, eos_token, unk_token]))
    backend.add_special_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=True) for t in specials])
    return backend


class CLIPTokenizerFast(_CLIPTokenizerBase):
    """CLIP's tokenizer backed by `tokenizers` (reads and writes tokenizer.json); transformers' fast outputs.

    ``CLIPTokenizerFast()`` uses OpenAI's bundled vocabulary; ``from_pretrained`` reads tokenizer.json
    when the folder has one, else vocab.json + merges.txt.
    """

    _default_padding = False
    _default_truncation = None
    _length_after_padding = True
    # transformers' fast tokenizers: the mask right after the ids.
    _KEY_ORDER = (
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "special_tokens_mask",
        "offset_mapping",
        "length",
    )

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        tokenizer_file: str | None = None,
        unk_token: str = EOS_TOKEN,
        bos_token: str = BOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        pad_token: str = EOS_TOKEN,
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
        errors: str = "replace",
        added_tokens: dict[str, int] | None = None,
        **kwargs,
    ):
        if tokenizer_file is not None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(tokenizer_file)
        else:
            if (vocab_file is None) != (merges_file is None):
                raise ValueError(
                    "give both vocab_file and merges_file, or neither (OpenAI's bundled vocabulary)"
                )
            encoder, merges = (
                openai_vocab() if vocab_file is None else read_vocab_files(vocab_file, merges_file)
            )
            backend = _backend_from_vocab(encoder, merges, unk_token, bos_token, eos_token)
        self._backend = backend
        self.errors = errors
        backend_added = {t.content: i for i, t in backend.get_added_tokens_decoder().items()}
        self._init_specials(
            backend.get_vocab(with_added_tokens=False),
            unk_token,
            bos_token,
            eos_token,
            pad_token,
            model_max_length,
            clean_up_tokenization_spaces,
            {**backend_added, **(added_tokens or {})},
        )
        self._python_path = self._is_standard_pipeline()
        self._word_ids = WordIdsCache(self._learn)
        self._init_options(kwargs)

    is_fast = True

    def _add_tokens(self, contents: list[str], special: bool) -> int:
        """Added to the `tokenizers` pipeline as transformers' fast class adds them (its count returned)."""
        count = (self._backend.add_special_tokens if special else self._backend.add_tokens)(contents)
        for index, token in self._backend.get_added_tokens_decoder().items():
            self.added_tokens_encoder[token.content] = index
            self.decoder[index] = token.content
        self._python_path = self._is_standard_pipeline()  # the library now cuts the added tokens out
        return count

    def _token_details(self, texts, add_special_tokens, layout) -> tuple[list, list, list]:
        """(offsets, word ids, tokens) of each text from the `tokenizers` pipeline, laid out like the ids."""
        details = ([], [], [])
        for encoding in self._backend.encode_batch(texts, add_special_tokens=False):
            offsets, words, tokens = list(encoding.offsets), list(encoding.word_ids), list(encoding.tokens)
            if add_special_tokens:  # transformers' post-processor: specials at (0, 0), in no word
                offsets = [(0, 0), *offsets, (0, 0)]
                words = [None, *words, None]
                tokens = [self.bos_token, *tokens, self.eos_token]
            for out, row, pad in zip(details, (offsets, words, tokens), ((0, 0), None, self.pad_token)):
                out.append(layout.pad(layout.truncate(row), pad))
        return details

    def clear_cache(self) -> None:
        """Forget the words seen so far, here and in the library's BPE cache."""
        self._word_ids.clear()
        self._backend.model._clear_cache()

    @property
    def backend_tokenizer(self):
        return self._backend

    def _is_standard_pipeline(self) -> bool:
        """True when the backend is CLIP's usual pipeline, so the Python shortcut gives its exact output."""
        spec = json.loads(self._backend.to_str())
        model = spec.get("model", {})
        added = {t["content"]: t for t in spec.get("added_tokens", [])}
        plain_specials = set(added) == {BOS_TOKEN, EOS_TOKEN} and all(
            t["normalized"] and not t["lstrip"] and not t["rstrip"] and not t["single_word"]
            for t in added.values()
        )
        return (
            spec.get("normalizer") == _NORMALIZER
            and spec.get("pre_tokenizer") == _PRE_TOKENIZER
            and model.get("type") == "BPE"
            and model.get("end_of_word_suffix") == END_OF_WORD
            and not model.get("continuing_subword_prefix")
            and model.get("dropout") is None
            and plain_specials
            and all(self.encoder.get(t) == self._lookup(t) for t in (BOS_TOKEN, EOS_TOKEN))
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> CLIPTokenizerFast:
        folder, config = cls._read_folder(pretrained_model_name_or_path, kwargs)
        tokenizer_file = os.path.join(folder, "tokenizer.json")
        if os.path.isfile(tokenizer_file):
            return cls(tokenizer_file=tokenizer_file, **{**config, **kwargs})
        vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        for path in (vocab_file, merges_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no tokenizer.json, nor {os.path.basename(path)}, in {folder}")
        return cls(vocab_file, merges_file, **{**config, **kwargs})

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """vocab.json and merges.txt, written by the library's BPE model (then moved into place atomically).

        The library writes them into the system's temporary folder, so that a write error in
        ``save_directory`` is Python's own OSError naming the file (and a crash leaves nothing there)."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"vocabulary folder {save_directory!r} does not exist")
        with tempfile.TemporaryDirectory(prefix="clip-vocab-") as tmp:
            written = []
            for path in self._backend.model.save(tmp, filename_prefix):
                target = os.path.join(save_directory, os.path.basename(path))
                atomic_copy(path, target)
                written.append(target)
        return tuple(written)

    def save_pretrained(self, save_directory: str) -> tuple[str, ...]:
        os.makedirs(save_directory, exist_ok=True)
        configs = self._write_configs(save_directory, "CLIPTokenizer")
        tokenizer_file = os.path.join(save_directory, "tokenizer.json")
        atomic_write_text(tokenizer_file, self._backend.to_str(pretty=True))  # what Tokenizer.save writes
        return (*configs, tokenizer_file, *self.save_vocabulary(save_directory))

    # ----- text -> ids ----------------------------------------------------------------------------
    def _encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        first, last = ([self.bos_token_id], [self.eos_token_id]) if add_special_tokens else ([], [])
        in_python, pieces, for_backend = [], [], []
        not_plain, not_safe = _NOT_PLAIN_ASCII.search, _NOT_PYTHON_SAFE.search
        for index, text in enumerate(texts):
            if not self._python_path:
                for_backend.append(index)
            elif not_plain(text) is None:
                in_python.append(index)
                pieces.append(self._pieces(text.lower(), _ASCII_WORDS))
            elif not_safe(text) is None:
                in_python.append(index)
                pieces.append(self._pieces(unicodedata.normalize("NFC", text).lower(), _UNICODE_WORDS))
            else:
                for_backend.append(index)
        ids: list = [None] * len(texts)
        for index, row in zip(in_python, self._word_ids.rows(pieces, first, last)):
            ids[index] = row
        if for_backend:
            # Special tokens are added here for every text alike (transformers' post-processor adds
            # the same two), so a custom tokenizer.json post-processor is not consulted.
            encodings = self._backend.encode_batch([texts[i] for i in for_backend], add_special_tokens=False)
            for index, encoding in zip(for_backend, encodings):
                ids[index] = first + encoding.ids + last
        return ids

    def _pieces(self, text: str, word_split) -> list[str | int]:
        """Words of the normalised text, with the ids of the special tokens the library cuts out first."""
        if "<|" not in text:
            return word_split.findall(text)
        pieces = []
        for index, chunk in enumerate(_SPECIAL_SPLIT.split(text)):
            if index % 2:
                pieces.append(self.encoder[chunk])
            else:
                pieces += word_split.findall(chunk)
        return pieces

    def _learn(self, words: list[str]) -> list[list[int]]:
        tokenize = self._backend.model.tokenize
        return [[token.id for token in tokenize(byte_encode(word))] for word in words]

    def _decode_ids(self, ids: list[int], skip_special_tokens: bool, spaces: bool = True) -> str:
        vocab_size = len(self)
        for index in ids:
            if not 0 <= index < vocab_size:
                raise ValueError(f"token id {index} is not in the vocabulary (size {vocab_size})")
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        return text.replace(END_OF_WORD, " ").strip()
