"""Tokenizer speed: texts/s turning 10,000 varied captions into [n, 77] int64 numpy arrays.

Ours and each reference run in the same process on the same captions (tools/tokenizer_texts.py:
drawn from ~30,000 words, so most words repeat but the tail is long). "cold" empties every word
cache the tokenizer has (ours, transformers' slow ``cache``, the `tokenizers` BPE cache) before
each timed call; "warm" keeps what earlier calls learned, as a long-running data loader would.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

from clip_core.tokenization import CLIPTokenizer
from clip_core.tokenization_fast import CLIPTokenizerFast
from tools.tokenizer_texts import bench_captions

NUM_CAPTIONS = 10_000
CALL = {"padding": "max_length", "truncation": True, "max_length": 77, "return_tensors": "np"}


def _transformers_pair():
    import transformers

    folder = tempfile.mkdtemp(prefix="clip-bench-tok-")
    # Our files are transformers' format (tests/test_tokenization.py checks transformers loads them).
    CLIPTokenizerFast().save_pretrained(folder)
    slow = transformers.CLIPTokenizer.from_pretrained(folder)
    fast = transformers.CLIPTokenizerFast.from_pretrained(folder)
    return slow, fast


def _open_clip_module():
    import transformers

    path = os.path.join(os.path.dirname(transformers.__file__), "..", "open_clip", "tokenizer.py")
    if not os.path.isfile(path):
        return None
    # The open_clip package __init__ needs torchvision; its tokenizer module alone does not.
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer_bench", os.path.normpath(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _forget_hf_slow(tok):
    tok.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}


def _row(what, ours, theirs, ours_value, theirs_value):
    return {
        "section": "tokenizers",
        "what": what,
        "ours": ours,
        "theirs": theirs,
        "unit": "texts/s",
        "ours_value": ours_value,
        "theirs_value": theirs_value,
    }


def rows(ctx) -> list[dict]:
    captions = bench_captions(NUM_CAPTIONS)
    n = len(captions)
    runs = {"warmup": 1, "runs": 3}

    def rate(fn, forget=None):
        def timed():
            if forget is not None:
                forget()
            fn()

        return n / ctx.time(timed, **runs)

    slow, fast = CLIPTokenizer(), CLIPTokenizerFast()
    hf_slow, hf_fast = _transformers_pair()
    out = []
    for label, forget in (("cold", True), ("warm", False)):
        what = f"tokenize {n} captions to [n, 77] np ({label} caches)"
        out.append(
            _row(
                what,
                "clip_core CLIPTokenizer",
                "transformers CLIPTokenizer (slow)",
                rate(lambda: slow(captions, **CALL), slow.clear_cache if forget else None),
                rate(
                    lambda: hf_slow(captions, **CALL), (lambda: _forget_hf_slow(hf_slow)) if forget else None
                ),
            )
        )
        out.append(
            _row(
                what,
                "clip_core CLIPTokenizerFast",
                "transformers CLIPTokenizerFast",
                rate(lambda: fast(captions, **CALL), fast.clear_cache if forget else None),
                rate(
                    lambda: hf_fast(captions, **CALL),
                    hf_fast.backend_tokenizer.model._clear_cache if forget else None,
                ),
            )
        )
    open_clip = _open_clip_module()
    if open_clip is not None:
        openai = CLIPTokenizer(mode="openai")
        reference = open_clip._tokenizer

        def forget_open_clip():
            reference.cache = {t: t for t in ("<start_of_text>", "<end_of_text>")}

        out.append(
            _row(
                f"OpenAI-style tokenize of {n} captions (cold caches)",
                "clip_core CLIPTokenizer(mode='openai')",
                "open_clip.tokenize",
                rate(lambda: openai(captions, return_tensors="np"), openai.clear_cache),
                rate(lambda: open_clip.tokenize(captions), forget_open_clip),
            )
        )
    try:
        import instant_clip_tokenizer
    except ImportError:
        instant_clip_tokenizer = None
    if instant_clip_tokenizer is not None:
        instant = instant_clip_tokenizer.Tokenizer()
        fast_warm = rate(lambda: fast(captions, **CALL))
        out.append(
            _row(
                f"tokenize {n} captions to [n, 77] np (warm caches)",
                "clip_core CLIPTokenizerFast",
                "instant-clip-tokenizer (Rust)",
                fast_warm,
                rate(lambda: instant.tokenize_batch(captions, 77)),
            )
        )
    return out
