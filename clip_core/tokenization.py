"""CLIPTokenizer: CLIP's byte-level BPE in pure Python, token for token equal to transformers' slow tokenizer.

Two modes:

* ``mode="transformers"`` (default) -- transformers 4.57.6's ``CLIPTokenizer``: ``ftfy.fix_text``,
  whitespace runs -> one space, lowercase, CLIP's split regex, BPE. Literal ``<|startoftext|>`` /
  ``<|endoftext|>`` in the text become the special ids. Padding uses ``<|endoftext|>`` (49407).
* ``mode="openai"`` -- open_clip's ``tokenize`` (OpenAI's ``clip.tokenize`` with ``truncate=True``):
  additionally ``html.unescape`` twice, every call pads to the context length (77) with id 0 and
  truncates keeping a final ``<|endoftext|>``. The literals open_clip recognises as special are
  ``<start_of_text>`` / ``<end_of_text>`` (OpenAI's original package recognised ``<|startoftext|>`` /
  ``<|endoftext|>`` instead; everything else is identical).

"Cleaned text": ``ftfy.fix_text(x)`` (then ``html.unescape`` twice in openai mode), whitespace runs
collapsed to one space, stripped, lowercased. ``decode(encode(x))`` gives back its words (CLIP's split)
joined by one space, except after a literal special token, whose vocabulary entry carries no
end-of-word mark (transformers decodes ``"x <|endoftext|> y"`` as ``"x <|endoftext|>y"``).
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import os
import re as std_re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain

import numpy as np
import regex

from .bpe_vocab import (
    BOS_TOKEN,
    END_OF_WORD,
    EOS_TOKEN,
    BytePairEncoder,
    WordIdsCache,
    byte_decode,
    byte_encode,
    openai_vocab,
    read_vocab_files,
    write_vocab_files,
)
from .files import HubOptions, atomic_write_text, read_json, resolve_folder
from .tensors import BatchEncoding
from .tensors import as_tensor as as_tensor  # re-exported: it lived here

OPENAI_CONTEXT_LENGTH = 77
# transformers' "no limit" model_max_length (saved as 1e30 when the folder names none).
_UNLIMITED = int(1e30)
_LARGE = int(1e20)

# CLIP's split regex (needs the `regex` package for \p{..}); specials first so they stay whole.
_WORD_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
TRANSFORMERS_SPLIT = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|" + _WORD_PATTERN, regex.IGNORECASE)
OPEN_CLIP_SPECIALS = ("<start_of_text>", "<end_of_text>")
OPENAI_SPLIT = regex.compile("|".join(OPEN_CLIP_SPECIALS) + "|" + _WORD_PATTERN, regex.IGNORECASE)
_WHITESPACE_RUN = regex.compile(r"\s+")

# Text made only of these characters is provably left alone by ftfy.fix_text: every ftfy step acts on
# non-ASCII characters (mojibake, C1 controls, ligatures, widths, curly quotes, surrogates), on
# ASCII controls other than tab/newline (terminal escapes, control removal, '\r' line breaks),
# or on HTML entities, which need '&'; fix_encoding returns pure-ASCII text unchanged and NFC is the
# identity on ASCII. html.unescape (openai mode) also returns text without '&' unchanged.
# In such text, CLIP's \p{L} is [a-zA-Z], \p{N} is [0-9] and \s is [\t\n ], so the stdlib `re`
# (several times faster than `regex`) splits it identically; the test corpus checks both claims.
_NEEDS_FTFY = std_re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")
_ASCII_SPLIT = std_re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"
)
_ASCII_OPENAI_SPLIT = std_re.compile(
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"
)

_PADDING = {
    False: None,
    "do_not_pad": None,
    True: "longest",
    "longest": "longest",
    "max_length": "max_length",
}
_TRUNCATION = {
    None: None,
    False: None,
    "do_not_truncate": None,
    True: "longest_first",
    "longest_first": "longest_first",
    "only_first": "longest_first",
}
_MODES = ("transformers", "openai")


def _fix_text():
    try:
        import ftfy
    except ImportError:
        raise ImportError(
            "CLIPTokenizer needs ftfy (pip install ftfy); without it transformers falls back to a different "
            "cleaner whose tokens differ"
        ) from None
    return ftfy.fix_text


@contextlib.contextmanager
def _gc_paused():
    """Encoding a batch allocates many small lists and no reference cycles; the cyclic GC would only
    re-scan the (large) word caches again and again, which costs more than the encoding itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    value = read_json(path)  # ValueError naming the file if it is not JSON, too large or too deep
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _token_content(value):
    """transformers stores a special token either as a string or as an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


_UNSUPPORTED_CALL = {
    "text_target": "CLIP has no target texts",
    "text_pair_target": "CLIP has no target texts",
    "stride": "overflowing windows are not supported; truncate instead",
    "return_overflowing_tokens": "overflowing windows are not supported; truncate instead",
    "is_split_into_words": "pass whole texts: CLIP's tokenizer splits words itself",
}


def _refuse_unsupported(kwargs: dict) -> None:
    """transformers' call options that do not apply to CLIP raise (saying why); unknown ones too."""
    for key, value in kwargs.items():
        if key not in _UNSUPPORTED_CALL:
            raise TypeError(f"the tokenizer got an unexpected keyword argument {key!r}")
        if value not in (None, False, 0):
            raise ValueError(f"{key} is not supported: {_UNSUPPORTED_CALL[key]}")


def _side(side: str, name: str) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
    return side


@dataclass
class _Layout:
    """How one call truncates and pads every per-token list (ids, masks, offsets, word ids) alike."""

    truncate_to: int | None = None
    keep_ends: bool = False  # the first and last tokens are the added specials: truncation keeps them
    truncation_side: str = "right"
    padding_side: str = "right"
    width: int | None = None  # padded length (None: no padding); longer rows stay longer

    def truncate(self, row: list) -> list:
        n = self.truncate_to
        if n is None or len(row) <= n:
            return row
        if self.truncation_side == "left":
            return row[:1] + row[len(row) - n + 1 :] if self.keep_ends else row[len(row) - n :]
        return row[: n - 1] + row[-1:] if self.keep_ends else row[:n]

    def truncate_all(self, rows: list[list]) -> list[list]:
        return rows if self.truncate_to is None else [self.truncate(row) for row in rows]

    def pad(self, row: list, value) -> list:
        missing = (self.width or 0) - len(row)
        if missing <= 0:
            return row
        return [value] * missing + row if self.padding_side == "left" else row + [value] * missing

    def pad_all(self, rows: list[list], value) -> list[list]:
        return [self.pad(row, value) for row in rows]


def _padded_width(rows, padding, max_length, multiple) -> int | None:
    if padding is None:
        return None
    width = max(map(len, rows), default=0) if padding == "longest" else max_length
    return -(-width // multiple) * multiple if multiple else width


def _as_python(value) -> tuple[object, str | None]:
    """Lists of ids from lists or tensors, and the tensor kind found ("np", "pt", "tf", "jax" or None)."""
    module = type(value).__module__.split(".")[0]
    if isinstance(value, np.ndarray):
        return value.tolist(), "np"
    if module == "torch":
        return value.tolist(), "pt"
    if module == "tensorflow":
        return value.numpy().tolist(), "tf"
    if module in ("jax", "jaxlib"):
        return np.asarray(value).tolist(), "jax"
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, np.integer)):
        converted = [_as_python(v) for v in value]
        return [c for c, _ in converted], next((k for _, k in converted if k), None)
    return value, None


class _CLIPTokenizerBase:
    """Everything but the text -> ids step: call API, padding, truncation, decoding, special tokens, files."""

    model_input_names = ["input_ids", "attention_mask"]
    _length_after_padding = False
    # The order of the output's keys: transformers' slow tokenizers add the mask last.
    _KEY_ORDER = (
        "input_ids",
        "token_type_ids",
        "special_tokens_mask",
        "offset_mapping",
        "length",
        "attention_mask",
    )
    _padding_side = "right"
    _truncation_side = "right"
    sep_token = cls_token = mask_token = None  # CLIP has none; add_special_tokens may set them
    additional_special_tokens: list[str] = []

    # tokenizer_config.json keys transformers writes that change nothing for CLIP.
    _IGNORED_INIT_KEYS = frozenset(
        {
            "add_prefix_space",
            "do_lower_case",
            "tokenizer_class",
            "processor_class",
            "name_or_path",
            "extra_special_tokens",
            "split_special_tokens",
            "use_fast",
            "auto_map",
            "tokenizer_file",
        }
    )

    def _init_options(self, kwargs: dict) -> None:
        """transformers' other init keywords: padding_side, truncation_side, additional_special_tokens."""
        self.padding_side = kwargs.pop("padding_side", "right")
        self.truncation_side = kwargs.pop("truncation_side", "right")
        self.name_or_path = str(kwargs.pop("name_or_path", "") or "")  # from_pretrained's argument
        additional = kwargs.pop("additional_special_tokens", None)
        unknown = sorted(set(kwargs) - self._IGNORED_INIT_KEYS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        self.additional_special_tokens = []
        if additional:
            self.add_special_tokens({"additional_special_tokens": list(additional)})

    @property
    def padding_side(self) -> str:
        """ "right" (default) or "left": where padding goes (an attribute, an init and a call argument)."""
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        self._padding_side = _side(side, "padding_side")

    @property
    def truncation_side(self) -> str:
        """ "right" (default) or "left": which end truncation cuts (the special tokens stay)."""
        return self._truncation_side

    @truncation_side.setter
    def truncation_side(self, side: str) -> None:
        self._truncation_side = _side(side, "truncation_side")

    # ----- adding tokens --------------------------------------------------------------------------
    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens (strings or AddedToken-like objects with ``.content``) to the vocabulary, with ids
        from ``len(tokenizer)`` on, as transformers does; the text is cut at them before it is split.
        Returns how many were added (e.g. for ``model.resize_token_embeddings(len(tokenizer))``)."""
        items = [new_tokens] if isinstance(new_tokens, str) or hasattr(new_tokens, "content") else new_tokens
        contents = [str(getattr(t, "content", t)) for t in items]
        contents = [c for c in dict.fromkeys(contents) if c]
        return self._add_tokens(contents, special_tokens) if contents else 0

    _SPECIAL_ATTRIBUTES = (
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    )

    def add_special_tokens(
        self, special_tokens_dict: dict, replace_additional_special_tokens: bool = True
    ) -> int:
        """Set special tokens (``{"pad_token": ..., "additional_special_tokens": [...]}``), adding the
        new ones to the vocabulary as transformers does; returns how many were added."""
        added = 0
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                values = [str(getattr(v, "content", v)) for v in value]
                added += self.add_tokens(values, special_tokens=True)
                kept = [] if replace_additional_special_tokens else self.additional_special_tokens
                self.additional_special_tokens = list(dict.fromkeys(kept + values))
            elif key in self._SPECIAL_ATTRIBUTES:
                content = str(getattr(value, "content", value))
                added += self.add_tokens([content], special_tokens=True)
                setattr(self, key, content)
            else:
                raise ValueError(
                    f"{key} is not a special token attribute; use one of {self._SPECIAL_ATTRIBUTES} or "
                    "additional_special_tokens"
                )
        return added

    def _add_tokens(self, contents: list[str], special: bool) -> int:
        raise NotImplementedError

    def get_added_vocab(self) -> dict[str, int]:
        """Tokens added beyond vocab.json (token -> id)."""
        return dict(self.added_tokens_encoder)

    def _init_specials(
        self,
        encoder: dict[str, int],
        unk_token: str,
        bos_token: str,
        eos_token: str,
        pad_token: str,
        model_max_length: int | None,
        clean_up_tokenization_spaces: bool,
        added_tokens: dict[str, int] | None,
    ) -> None:
        self.encoder = encoder
        self.decoder = {i: t for t, i in encoder.items()}
        # Tokens outside vocab.json (e.g. added for textual inversion) from tokenizer_config.json.
        self.added_tokens_encoder = dict(added_tokens or {})
        for token, index in self.added_tokens_encoder.items():
            self.decoder[index] = token
        self.unk_token, self.bos_token, self.eos_token, self.pad_token = (
            unk_token,
            bos_token,
            eos_token,
            pad_token,
        )
        for name, token in (("unk", unk_token), ("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
            if self._lookup(token) is None:
                raise ValueError(f"{name}_token {token!r} is not in the vocabulary")
        self.model_max_length = OPENAI_CONTEXT_LENGTH if model_max_length is None else int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)

    def _lookup(self, token: str) -> int | None:
        index = self.added_tokens_encoder.get(token)
        return self.encoder.get(token) if index is None else index

    # ----- special tokens -------------------------------------------------------------------------
    @property
    def unk_token_id(self) -> int:
        return self._lookup(self.unk_token)

    @property
    def bos_token_id(self) -> int:
        return self._lookup(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self._lookup(self.eos_token)

    @property
    def pad_token_id(self) -> int:
        return self._lookup(self.pad_token)

    @property
    def all_special_tokens(self) -> list[str]:
        named = [getattr(self, name) for name in self._SPECIAL_ATTRIBUTES]
        return list(dict.fromkeys([t for t in named if t is not None] + list(self.additional_special_tokens)))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._lookup(t) for t in self.all_special_tokens]

    @property
    def special_tokens_map(self) -> dict:
        tokens = {
            name: getattr(self, name) for name in self._SPECIAL_ATTRIBUTES if getattr(self, name) is not None
        }
        if self.additional_special_tokens:
            tokens["additional_special_tokens"] = list(self.additional_special_tokens)
        return tokens

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self) -> int:
        return len(set(self.encoder) | set(self.added_tokens_encoder))

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self.added_tokens_encoder}

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None) -> list[int]:
        """``<|startoftext|> A <|endoftext|>``; a pair (not a CLIP use) is joined with no separator, as transformers does."""
        bos, eos = [self.bos_token_id], [self.eos_token_id]
        if token_ids_1 is None:
            return bos + list(token_ids_0) + eos
        return bos + list(token_ids_0) + eos + eos + list(token_ids_1) + eos

    def get_special_tokens_mask(
        self, token_ids_0, token_ids_1=None, already_has_special_tokens=False
    ) -> list[int]:
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when the ids already contain special tokens")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1, 1] + [0] * len(token_ids_1) + [1]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding adds: 2 (4 for a pair, as transformers counts it)."""
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None) -> list[int]:
        """CLIP has no token types: zeros as long as the sequence with its special tokens."""
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    # ----- tokens <-> ids -------------------------------------------------------------------------
    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            found = self._lookup(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)):
            return self.decoder.get(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self.decoder.get(int(i)) for i in ids if int(i) not in special]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return byte_decode("".join(tokens), self.errors).replace(END_OF_WORD, " ").strip()

    # ----- encoding -------------------------------------------------------------------------------
    def _encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        """ids of each text, between <|startoftext|> and <|endoftext|> when add_special_tokens."""
        raise NotImplementedError

    def tokenize(self, text: str, **kwargs) -> list[str]:
        return [self.decoder[i] for i in self._encode_batch([text], False)[0]]

    def encode(
        self,
        text: str,
        text_pair=None,
        add_special_tokens: bool = True,
        padding=False,
        truncation=None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ):
        """The ids of one text (a list, or a (1, seq) tensor with ``return_tensors``)."""
        encoded = self(
            text,
            text_pair=text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_tensors=return_tensors,
            return_attention_mask=False,
            **kwargs,
        )
        return encoded["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """transformers' single-text encode: the same as ``tokenizer(text, ...)``."""
        if not isinstance(text, str):
            raise ValueError(
                f"encode_plus takes one text (a string), got {type(text).__name__}; use batch_encode_plus"
            )
        return self(text, text_pair=text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        """transformers' batch encode: the same as ``tokenizer(texts, ...)``."""
        texts = list(batch_text_or_text_pairs)
        if any(isinstance(t, (tuple, list)) for t in texts):
            raise ValueError("CLIP encodes single texts; text pairs are not supported")
        return self(texts, **kwargs)

    def __call__(
        self,
        text=None,
        text_pair=None,
        add_special_tokens: bool = True,
        padding=None,
        truncation=None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        return_length: bool = False,
        return_token_type_ids: bool | None = None,
        pad_to_multiple_of: int | None = None,
        verbose: bool = True,
        padding_side: str | None = None,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        **kwargs,
    ) -> BatchEncoding:
        """Encode a text or a list of texts, as transformers' tokenizers: ``padding`` (True /
        "longest" / "max_length"), ``truncation``, ``max_length``, ``pad_to_multiple_of``,
        ``padding_side`` ("right" / "left", default the ``padding_side`` attribute; truncation
        follows ``truncation_side``), ``return_tensors`` ("np", "pt", "tf" (int32, as transformers),
        "jax"), ``return_attention_mask``, ``return_token_type_ids`` (zeros),
        ``return_special_tokens_mask``, ``return_offsets_mapping`` (fast tokenizer), ``return_length``.
        """
        _refuse_unsupported(kwargs)
        if text is None:
            raise ValueError("text must be a string or a list of strings, not None")
        if text_pair is not None:
            raise ValueError("CLIP encodes single texts; text_pair is not supported")
        if return_offsets_mapping and not self.is_fast:
            raise NotImplementedError(
                "return_offset_mapping is not available with CLIPTokenizer (pure Python); use CLIPTokenizerFast"
            )
        if pad_to_multiple_of is not None and (
            not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of must be a positive integer, not {pad_to_multiple_of!r}")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                raise ValueError(f"text[{index}] must be a string, not {type(item).__name__}")
        padding, truncation, max_length = self._resolve_strategies(padding, truncation, max_length)
        if padding and truncation and pad_to_multiple_of and max_length % pad_to_multiple_of:
            raise ValueError(
                f"truncation length {max_length} is not a multiple of pad_to_multiple_of={pad_to_multiple_of}, "
                "so padded rows would exceed it"
            )
        with _gc_paused():
            ids = self._encode_batch(texts, add_special_tokens)
        layout = _Layout(
            truncate_to=max_length if truncation is not None else None,
            keep_ends=add_special_tokens,
            truncation_side=self.truncation_side,
            padding_side=_side(
                padding_side if padding_side is not None else self.padding_side, "padding_side"
            ),
        )
        ids = layout.truncate_all(ids)
        if return_tensors is not None and truncation is None and self.model_max_length < _LARGE:
            self._check_fits_context(ids)
        layout.width = _padded_width(ids, padding, max_length, pad_to_multiple_of)
        encoding = self._pad(ids, layout, return_tensors, return_attention_mask is not False)
        extras = {}
        if return_token_type_ids:  # CLIP has no token types; transformers returns zeros when asked
            extras["token_type_ids"] = layout.pad_all([[0] * len(row) for row in ids], 0)
        if return_special_tokens_mask:
            masks = [self._special_mask(row, add_special_tokens) for row in ids]
            extras["special_tokens_mask"] = layout.pad_all(masks, 1)
        if return_offsets_mapping:
            extras["offset_mapping"] = self._token_details(texts, add_special_tokens, layout)[0]
        if return_length:
            # The two transformers classes disagree: the slow one counts tokens, the fast one padded positions.
            rows = encoding["input_ids"] if self._length_after_padding else ids
            extras["length"] = [len(row) for row in rows]
        encoding.update(extras)
        encoding = BatchEncoding({key: encoding[key] for key in self._KEY_ORDER if key in encoding})
        if single and return_tensors is None:
            encoding = BatchEncoding({k: v[0] for k, v in encoding.items()})
        if self.is_fast:  # word_ids(), tokens(), sequence_ids(): computed when first asked for
            encoding.set_token_details(lambda: self._token_details(texts, add_special_tokens, layout))
        return encoding.convert_to_tensors(return_tensors)

    is_fast = False

    def _token_details(self, texts, add_special_tokens, layout) -> tuple[list, list, list]:
        """(offsets, word ids, tokens) of each text, truncated and padded like its ids (fast only)."""
        raise ValueError(
            "word_ids(), tokens() and offsets are not available with CLIPTokenizer (pure Python); "
            "use CLIPTokenizerFast"
        )

    def _special_mask(self, row: list[int], add_special_tokens: bool) -> list[int]:
        """1 at the <|startoftext|> / <|endoftext|> the tokenizer added, 0 elsewhere (as transformers)."""
        if not add_special_tokens:
            return [0] * len(row)
        return [1] + [0] * (len(row) - 2) + [1]

    def _resolve_strategies(self, padding, truncation, max_length):
        if padding is None:
            padding = self._default_padding
        if truncation is None and self._default_truncation is not None:
            truncation = self._default_truncation
        try:
            padding = _PADDING[padding]
        except (KeyError, TypeError):
            raise ValueError(
                f"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', not {padding!r}"
            ) from None
        explicit_truncation = truncation is not None
        try:
            truncation = _TRUNCATION[truncation]
        except (KeyError, TypeError):
            raise ValueError(
                f"truncation must be None, False, True, 'longest_first', 'only_first' or 'do_not_truncate', "
                f"not {truncation!r}"
            ) from None
        if max_length is not None:
            if not isinstance(max_length, (int, np.integer)) or max_length < 2:
                raise ValueError(
                    f"max_length must be an integer >= 2 (room for the special tokens), got {max_length!r}"
                )
            if max_length > self.model_max_length:
                raise ValueError(
                    f"max_length={max_length} exceeds the model's context of {self.model_max_length} positions"
                )
            if padding is None and not explicit_truncation:
                # transformers: a max_length with neither padding nor truncation asked for means truncate.
                truncation = "longest_first"
        elif padding == "max_length" or truncation is not None:
            if self.model_max_length >= _LARGE:
                # No known context: transformers then neither pads to nor truncates at a length.
                padding = None if padding == "max_length" else padding
                truncation = None
            else:
                max_length = self.model_max_length
        return padding, truncation, max_length

    def _check_fits_context(self, ids: list[list[int]]) -> None:
        for index, row in enumerate(ids):
            if len(row) > self.model_max_length:
                raise ValueError(
                    f"text {index} has {len(row)} tokens, more than the model's context of {self.model_max_length}; "
                    "pass truncation=True to cut it (keeping the final <|endoftext|>)"
                )

    def _pad(self, ids, layout: _Layout, return_tensors, with_mask: bool) -> BatchEncoding:
        """input_ids (and attention_mask) padded to ``layout.width`` on ``layout.padding_side``."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        if layout.width is None:
            if return_tensors is not None and len(set(lengths.tolist())) > 1:
                raise ValueError(
                    "texts have different lengths; pass padding=True (or 'max_length') to return tensors"
                )
            encoding = BatchEncoding(input_ids=ids)
            if with_mask:
                encoding["attention_mask"] = [[1] * len(row) for row in ids]
            return encoding
        longest, target = int(lengths.max(initial=0)), layout.width
        if longest > target:
            # Padding never cuts (truncation is a separate step, as in transformers), so rows stay ragged.
            if return_tensors is not None:
                index = int(np.argmax(lengths))
                raise ValueError(
                    f"text {index} has {longest} tokens, more than max_length={target}; "
                    "pass truncation=True to cut it to that length"
                )
            encoding = BatchEncoding(input_ids=layout.pad_all(ids, self.pad_token_id))
            if with_mask:
                encoding["attention_mask"] = layout.pad_all([[1] * len(row) for row in ids], 0)
            return encoding
        # One vectorised scatter instead of a Python loop per row.
        positions = np.arange(target)[None, :]
        if layout.padding_side == "left":
            valid = positions >= target - lengths[:, None]
        else:
            valid = positions < lengths[:, None]
        input_ids = np.full((len(ids), target), self.pad_token_id, dtype=np.int64)
        if len(ids):
            input_ids[valid] = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        mask = valid.astype(np.int64)
        if return_tensors is None:
            input_ids, mask = input_ids.tolist(), mask.tolist()
        encoding = BatchEncoding(input_ids=input_ids)
        if with_mask:
            encoding["attention_mask"] = mask
        return encoding

    def pad(
        self,
        encoded_inputs,
        padding=True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors=None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad encodings made earlier (a tokenizer output, a list of them, or a dict of lists), as
        transformers' ``pad``: input_ids with the pad token, attention_mask and token_type_ids with 0,
        special_tokens_mask with 1; tensors in, the same kind of tensors out."""
        if (
            isinstance(encoded_inputs, (list, tuple))
            and encoded_inputs
            and isinstance(encoded_inputs[0], Mapping)
        ):
            encoded_inputs = {key: [example[key] for example in encoded_inputs] for key in encoded_inputs[0]}
        if not isinstance(encoded_inputs, Mapping) or "input_ids" not in encoded_inputs:
            raise ValueError("pad takes an encoding, a list of encodings, or a dict of lists with input_ids")
        inputs, found_tensors = {}, None
        for key, value in encoded_inputs.items():
            inputs[key], kind = _as_python(value)
            found_tensors = found_tensors or kind
        return_tensors = return_tensors if return_tensors is not None else found_tensors
        rows = inputs["input_ids"]
        single = bool(rows) and not isinstance(rows[0], list)
        if single:
            inputs = {key: [value] for key, value in inputs.items()}
            rows = inputs["input_ids"]
        if return_attention_mask is not False and "attention_mask" not in inputs:
            inputs["attention_mask"] = [[1] * len(row) for row in rows]
        if return_attention_mask is False:
            inputs.pop("attention_mask", None)
        strategy, _, max_length = self._resolve_strategies(padding, False, max_length)
        layout = _Layout(
            padding_side=_side(
                padding_side if padding_side is not None else self.padding_side, "padding_side"
            )
        )
        layout.width = _padded_width(rows, strategy, max_length, pad_to_multiple_of)
        values = {
            "input_ids": self.pad_token_id,
            "attention_mask": 0,
            "token_type_ids": 0,
            "special_tokens_mask": 1,
        }
        out = BatchEncoding()
        for key, value in inputs.items():
            padded = layout.pad_all(value, values[key]) if key in values and layout.width else value
            out[key] = padded[0] if single else padded
        return out.convert_to_tensors(return_tensors)

    # ----- decoding -------------------------------------------------------------------------------
    def decode(
        self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs
    ) -> str:
        """Text from ids; ``spaces_between_special_tokens`` (default True) as transformers' slow class."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        spaces = kwargs.pop("spaces_between_special_tokens", True)
        text = self._decode_ids([int(i) for i in token_ids], skip_special_tokens, spaces)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs
    ):
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [
            self.decode(s, skip_special_tokens, clean_up_tokenization_spaces, **kwargs) for s in sequences
        ]

    def _decode_ids(self, ids: list[int], skip_special_tokens: bool, spaces: bool = True) -> str:
        """transformers' slow decoding: byte-level pieces joined, added tokens (not special ones) set
        apart and the parts joined by a space (``spaces``)."""
        tokens = [self.decoder.get(i) for i in ids]
        for index, token in zip(ids, tokens):
            if token is None:
                raise ValueError(f"token id {index} is not in the vocabulary (size {len(self)})")
        special = set(self.all_special_tokens)
        added = (set(self.added_tokens_encoder) - special) | {
            t for t in self.additional_special_tokens if self._lookup(t) >= self.vocab_size
        }
        parts, current = [], []
        for token in tokens:
            if skip_special_tokens and token in special:
                continue
            if token in added:
                text = self.convert_tokens_to_string(current) if current else ""
                parts += [text, token] if text else [token]
                current = []
            else:
                current.append(token)
        if current:
            parts.append(self.convert_tokens_to_string(current))
        return (" " if spaces else "").join(parts)

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """transformers' English spacing clean-up (" ." -> ".", " n't" -> "n't", ...)."""
        for before, after in (
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ):
            text = text.replace(before, after)
        return text

    # ----- files ----------------------------------------------------------------------------------
    @staticmethod
    def _read_folder(pretrained, kwargs: dict) -> tuple[str, dict]:
        """The local folder (Hub options such as subfolder, revision, cache_dir are taken out of
        ``kwargs``) and the init keywords its tokenizer_config.json / special_tokens_map.json give."""
        folder = resolve_folder(pretrained, hub=HubOptions.pop_from(kwargs))
        config = _read_json(os.path.join(folder, "special_tokens_map.json"))
        config.update(_read_json(os.path.join(folder, "tokenizer_config.json")))
        kwargs = {}
        for name in ("unk_token", "bos_token", "eos_token", "pad_token"):
            if config.get(name) is not None:
                kwargs[name] = _token_content(config[name])
        for name in (
            "model_max_length",
            "clean_up_tokenization_spaces",
            "errors",
            "padding_side",
            "truncation_side",
        ):
            if name in config:
                kwargs[name] = config[name]
        if config.get("additional_special_tokens"):
            kwargs["additional_special_tokens"] = [
                _token_content(t) for t in config["additional_special_tokens"]
            ]
        added = config.get("added_tokens_decoder") or {}
        kwargs["added_tokens"] = {_token_content(v): int(k) for k, v in added.items()}
        kwargs["name_or_path"] = os.fspath(pretrained)
        if kwargs.get("model_max_length") is not None and kwargs["model_max_length"] >= _LARGE:
            kwargs["model_max_length"] = _UNLIMITED
        return folder, kwargs

    def _tokenizer_config(self, tokenizer_class: str) -> dict:
        def added(content):
            return {
                "content": content,
                "lstrip": False,
                "normalized": True,
                "rstrip": False,
                "single_word": False,
                "special": content in self.all_special_tokens,
            }

        added_ids = {self._lookup(t): t for t in self.all_special_tokens} | {
            i: t for t, i in self.added_tokens_encoder.items()
        }
        sides = {
            name: getattr(self, name)
            for name in ("padding_side", "truncation_side")
            if getattr(self, name) != "right"
        }
        extra = (
            {"additional_special_tokens": self.additional_special_tokens}
            if self.additional_special_tokens
            else {}
        )
        return {
            **sides,
            **extra,
            "added_tokens_decoder": {str(i): added(t) for i, t in sorted(added_ids.items())},
            "bos_token": self.bos_token,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "eos_token": self.eos_token,
            "errors": self.errors,
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "tokenizer_class": tokenizer_class,
            "unk_token": self.unk_token,
        }

    def _write_configs(self, folder: str, tokenizer_class: str) -> list[str]:
        os.makedirs(folder, exist_ok=True)
        config_file = os.path.join(folder, "tokenizer_config.json")
        map_file = os.path.join(folder, "special_tokens_map.json")
        atomic_write_text(config_file, json.dumps(self._tokenizer_config(tokenizer_class), indent=2) + "\n")
        atomic_write_text(map_file, json.dumps(self.special_tokens_map, indent=2) + "\n")
        return [config_file, map_file]


class CLIPTokenizer(_CLIPTokenizerBase):
    """CLIP's tokenizer in pure Python (ftfy + regex + byte-level BPE with a word cache).

    ``CLIPTokenizer()`` uses OpenAI's vocabulary bundled with the package; ``from_pretrained`` reads a
    transformers folder (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) or Hub id.
    ``mode="openai"`` reproduces open_clip's ``tokenize`` (see the module docstring).
    """

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        errors: str = "replace",
        unk_token: str = EOS_TOKEN,
        bos_token: str = BOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        pad_token: str | None = None,
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
        mode: str = "transformers",
        added_tokens: dict[str, int] | None = None,
        **kwargs,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        if (vocab_file is None) != (merges_file is None):
            raise ValueError("give both vocab_file and merges_file, or neither (OpenAI's bundled vocabulary)")
        encoder, merges = openai_vocab() if vocab_file is None else read_vocab_files(vocab_file, merges_file)
        self.mode = mode
        self.errors = errors
        self.merges = merges
        if pad_token is None:
            # OpenAI pads with id 0 (the token "!"); transformers with <|endoftext|>.
            pad_token = self._token_of_id(encoder, 0) if mode == "openai" else EOS_TOKEN
        self._init_specials(
            encoder,
            unk_token,
            bos_token,
            eos_token,
            pad_token,
            model_max_length,
            clean_up_tokenization_spaces,
            added_tokens,
        )
        self._bpe = BytePairEncoder(encoder, merges, self.unk_token_id)
        self._fix_text = _fix_text()
        if mode == "openai":
            self._default_padding, self._default_truncation = "max_length", True
            self._split, self._ascii_split = OPENAI_SPLIT, _ASCII_OPENAI_SPLIT
            # open_clip names its specials <start_of_text>/<end_of_text> and finds them in the cleaned text.
            self._literal_ids = dict(zip(OPEN_CLIP_SPECIALS, (encoder[BOS_TOKEN], encoder[EOS_TOKEN])))
            self._added_split = None
        else:
            self._default_padding, self._default_truncation = False, None
            self._split, self._ascii_split = TRANSFORMERS_SPLIT, _ASCII_SPLIT
            self._literal_ids = {BOS_TOKEN: encoder[BOS_TOKEN], EOS_TOKEN: encoder[EOS_TOKEN]}
            self._build_added_split()
        self._word_ids = WordIdsCache(self._learn)
        self._init_options(kwargs)

    def _build_added_split(self) -> None:
        # transformers cuts the raw text at added tokens (exact case) before any cleaning.
        added = sorted({*self.all_special_tokens, *self.added_tokens_encoder}, key=len, reverse=True)
        self._added_split = std_re.compile("(" + "|".join(std_re.escape(t) for t in added) + ")")

    def _add_tokens(self, contents: list[str], special: bool) -> int:
        if self.mode == "openai":
            raise ValueError(
                "add_tokens is not supported in mode='openai' (open_clip's tokenize has no added tokens)"
            )
        count = 0
        for content in contents:
            if content in self.added_tokens_encoder:
                continue
            if content in self.encoder:  # registered (cut out of texts) but not new, as transformers
                self.added_tokens_encoder[content] = self.encoder[content]
                continue
            index = len(self)
            self.added_tokens_encoder[content] = index
            self.decoder[index] = content
            count += 1
        self._build_added_split()
        return count

    def clear_cache(self) -> None:
        """Forget the words seen so far (they are re-encoded on next sight; for benchmarks and memory)."""
        self._word_ids.clear()

    @staticmethod
    def _token_of_id(encoder, index):
        return next(t for t, i in encoder.items() if i == index)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> CLIPTokenizer:
        folder, config = cls._read_folder(pretrained_model_name_or_path, kwargs)
        vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        for path in (vocab_file, merges_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no {os.path.basename(path)} in {folder}")
        return cls(vocab_file, merges_file, **{**config, **kwargs})

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, str]:
        return write_vocab_files(save_directory, self.encoder, self.merges, filename_prefix)

    def save_pretrained(self, save_directory: str) -> tuple[str, ...]:
        os.makedirs(save_directory, exist_ok=True)
        configs = self._write_configs(save_directory, "CLIPTokenizer")
        return (*configs, *self.save_vocabulary(save_directory))

    # ----- text -> ids ----------------------------------------------------------------------------
    def clean_text(self, text: str) -> str:
        """The cleaned, lowercased text the split regex sees (see the module docstring)."""
        text = self._fix_text(text)
        if self.mode == "openai":
            text = html.unescape(html.unescape(text)).strip()
            return " ".join(text.split()).lower()
        return _WHITESPACE_RUN.sub(" ", text).strip().lower()

    def _words(self, chunk: str) -> list[str]:
        if _NEEDS_FTFY.search(chunk) is None:
            # Provably untouched by ftfy/unescape (see _NEEDS_FTFY), and the split ignores whitespace.
            return self._ascii_split.findall(chunk.lower())
        return self._split.findall(self.clean_text(chunk))

    def _learn(self, words: list[str]) -> list[list[int]]:
        """BPE ids of each word; a literal special token (the split keeps it whole) is its own id."""
        learned = []
        for word in words:
            special = self._literal_ids.get(word)
            learned.append([special] if special is not None else self._bpe.ids(byte_encode(word)))
        return learned

    def _pieces(self, text: str) -> list[str | int]:
        """The text's words, with the ids of added tokens cut out of the raw text in their place."""
        if self._added_split is None:
            return self._words(text)
        pieces = []
        for index, chunk in enumerate(self._added_split.split(text)):
            if index % 2:
                pieces.append(self._lookup(chunk))
            elif chunk:
                pieces += self._words(chunk)
        return pieces

    def _encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        first, last = ([self.bos_token_id], [self.eos_token_id]) if add_special_tokens else ([], [])
        return self._word_ids.rows([self._pieces(t) for t in texts], first, last)


def tokenize(texts, context_length: int = OPENAI_CONTEXT_LENGTH, truncate: bool = True) -> np.ndarray:
    """open_clip's / OpenAI's ``tokenize``: int64 array [n, context_length], padded with 0.

    With ``truncate=False`` a text over the context raises ValueError (OpenAI's behaviour); with
    ``truncate=True`` it is cut keeping a final ``<|endoftext|>`` (open_clip's behaviour).
    """
    tokenizer = _openai_tokenizer(context_length)
    return tokenizer(texts, truncation=bool(truncate), return_tensors="np", return_attention_mask=False)[
        "input_ids"
    ]


_OPENAI_TOKENIZERS: dict[int, CLIPTokenizer] = {}


def _openai_tokenizer(context_length: int) -> CLIPTokenizer:
    if context_length not in _OPENAI_TOKENIZERS:
        _OPENAI_TOKENIZERS[context_length] = CLIPTokenizer(mode="openai", model_max_length=context_length)
    return _OPENAI_TOKENIZERS[context_length]
