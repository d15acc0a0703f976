"""Hostile inputs: the pure-Python BPE on very long words (near-linear, ids unchanged), and images that
are decompression bombs, absurdly thin, non-finite or 16-bit, plus a hypothesis fuzz of image inputs
and of image files.

What must hold: the same ids as the textbook BPE (OpenAI's loop, written out here); work that grows
about linearly with a word's length; a ValueError naming the problem before anything large is
allocated, and the same answer for a PIL image and the array of its pixels.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from clip_core.bpe_vocab import BytePairEncoder, openai_vocab
from clip_core.image_processing import CLIPImageProcessor

# ---------------------------------------------------------------------------------------------------
# BPE


def textbook_bpe(word: str, ranks: dict) -> list[str]:
    """OpenAI's CLIP loop: merge every occurrence of the lowest-ranked pair, left to right, again and again."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


@pytest.fixture(scope="module")
def bpe():
    encoder, merges = openai_vocab()
    return BytePairEncoder(encoder, merges, unk_id=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(word=st.text(alphabet="aeinorst", min_size=1, max_size=300) | st.text(min_size=1, max_size=40))
@example(word="a" * 301)
@example(word="abababababab")
def test_bpe_equals_the_textbook_loop(bpe, word):
    from clip_core.bpe_vocab import byte_encode

    encoded = byte_encode(word)
    assert list(bpe._merge(encoded)) == textbook_bpe(encoded, bpe.ranks)


@settings(max_examples=200, deadline=None)
@given(
    merges=st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcd")), min_size=1, max_size=12),
    word=st.text(alphabet="abcd", min_size=1, max_size=60),
)
def test_bpe_equals_the_textbook_loop_for_any_merge_list(merges, word):
    """Merge lists that do not build on themselves (a merge may make a pair of a lower rank)."""
    merges = list(dict.fromkeys(merges))
    symbols = {a + b for a, b in merges} | set("abcd")
    merges += [(a, b) for a in sorted(symbols) for b in sorted(symbols) if (a, b) not in merges][:30]
    encoder = {s: i for i, s in enumerate(sorted({"".join(m) for m in merges} | set("abcd")))}
    bpe = BytePairEncoder(encoder, merges, unk_id=0)
    assert list(bpe._merge(word)) == textbook_bpe(word, bpe.ranks)


def _seconds(call) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def test_bpe_time_grows_about_linearly_with_the_word(bpe):
    """Ratio of times for words 8x apart, measured in one process: linear ~8, quadratic ~64."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    short = "".join(rng.choice(letters, 10_000))
    long = "".join(rng.choice(letters, 80_000))
    ratio = _seconds(lambda: bpe.ids(long)) / _seconds(lambda: bpe.ids(short))
    assert ratio < 20, f"8x longer word took {ratio:.1f}x the time"


def test_a_long_word_through_both_tokenizers():
    """100,000 random letters: the pure-Python tokenizer gives the Rust one's ids (it took ~2 s per
    10,000 characters squared before the merge queue)."""
    from clip_core.tokenization import CLIPTokenizer
    from clip_core.tokenization_fast import CLIPTokenizerFast

    rng = np.random.default_rng(1)
    word = "".join(rng.choice(np.array(list("abcdefghijklmnopqrstuvwxyz")), 100_000))
    ours = CLIPTokenizer()(word, truncation=False)["input_ids"]
    assert ours == CLIPTokenizerFast()(word, truncation=False)["input_ids"] and len(ours) > 20_000


# ---------------------------------------------------------------------------------------------------
# Images: bombs, thin images, non-finite values, 16 bits


def _png_header_only(width: int, height: int, mode_bits=(1, 0)) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb's header) with a tiny body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, mode_bits[0], mode_bits[1], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("pixels", [60_000 * 60_000, 10_000 * 10_000])
def test_decompression_bombs_are_value_errors_before_decoding(tmp_path, pixels):
    side = int(pixels**0.5)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even PIL's DecompressionBombWarning
        with pytest.raises(ValueError, match="bomb.png"):
            CLIPImageProcessor()(str(path))
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((2, 10_000, 3), np.uint8),
        np.zeros((10_000, 1), np.uint8),
        Image.new("RGB", (10_000, 1)),
        np.broadcast_to(np.zeros(3, np.uint8), (30_000, 30_000, 3)),  # 2.7 GB, but a zero-size view
    ],
    ids=["2x10000", "10000x1", "pil-10000x1", "30000x30000-view"],
)
def test_absurd_aspect_ratios_and_sizes_are_value_errors_before_allocating(image):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="pixels|aspect"):
        CLIPImageProcessor()(image, return_tensors="np")
    assert time.perf_counter() - start < 2


def test_wide_but_sane_images_still_work():
    out = CLIPImageProcessor()(np.zeros((20, 2000, 3), np.uint8), return_tensors="np")["pixel_values"]
    assert out.shape == (1, 3, 224, 224)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_alike_for_pil_and_arrays(bad):
    values = np.full((8, 8), 0.5, np.float32)
    values[3, 4] = bad
    processor = CLIPImageProcessor()
    for image in (values, Image.fromarray(values)):
        for convert in (True, False):
            with pytest.raises(ValueError, match="NaN or infinite"):
                processor(image, do_convert_rgb=convert, return_tensors="np")


def test_uint16_arrays_and_i16_images_alike():
    processor = CLIPImageProcessor(image_mean=0.5, image_std=0.25)  # one value: grey images stay grey
    small = (np.arange(48 * 40).reshape(48, 40) % 256).astype(np.uint16)
    for convert in (True, False):
        a = processor(small, do_convert_rgb=convert, return_tensors="np")["pixel_values"]
        b = processor(Image.fromarray(small), do_convert_rgb=convert, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(a, b)
    large = small * 200  # 16-bit range: neither is silently clipped to 255
    for image in (large, Image.fromarray(large), Image.fromarray(large.astype(np.int32))):
        for convert in (True, False):
            with pytest.raises(ValueError, match="255"):
                processor(image, do_convert_rgb=convert, return_tensors="np")


def test_crop_and_resize_settings_have_sanity_limits(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"crop_size": {"height": 1000000000, "width": 1000000000}}'
    )
    with pytest.raises(ValueError, match="preprocessor_config.json.*crop_size"):
        CLIPImageProcessor.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------
# Fuzz: any image the processor accepts gives finite pixels of the right shape; the rest ValueError

DTYPES = [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_, np.float16]


@st.composite
def array_images(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 40), st.integers(1, 40)),
            st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4])),
            st.tuples(st.sampled_from([1, 2, 3, 4]), st.integers(1, 40), st.integers(1, 40)),
        )
    )
    if dtype == np.bool_:
        return draw(st.sampled_from([np.zeros(shape, bool), np.ones(shape, bool)]))
    kind = draw(st.sampled_from(["unit", "byte", "wide", "special"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "unit":
        values = rng.random(shape)
    elif kind == "byte":
        values = rng.integers(0, 256, shape)
    elif kind == "wide":
        values = rng.integers(-70000, 70000, shape)
    else:
        values = rng.choice([0.0, 1.0, 255.0, np.nan, np.inf, -1.0, 256.0], shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype)


PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "I", "I;16", "F", "CMYK", "YCbCr", "LAB", "HSV"]


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(PIL_MODES))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode in ("I", "I;16", "F"):
        scale = draw(st.sampled_from([1, 300]))
        values = rng.integers(0, 256, size[::-1]) * scale
        if mode == "F":
            values = values.astype(np.float32)
            if draw(st.booleans()):
                values[0, 0] = draw(st.sampled_from([np.nan, np.inf]))
            return Image.fromarray(values, mode="F")
        return Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.int32))
    return base.convert(mode)


@settings(max_examples=150, deadline=None)
@given(image=st.one_of(array_images(), pil_images()), convert=st.booleans(), resize=st.booleans())
def test_fuzz_image_inputs(image, convert, resize):
    processor = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            out = processor(image, do_convert_rgb=convert, do_resize=resize, return_tensors="np")[
                "pixel_values"
            ]
        except ValueError:
            return
    assert out.dtype == np.float32 and out.shape[0] == 1 and out.shape[2:] == (20, 20)
    assert np.isfinite(out).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]),
    seed=st.integers(0, 2**32 - 1),
    damage=st.sampled_from(["none", "truncate", "flip", "garbage"]),
)
def test_fuzz_image_files(tmp_path, fmt, seed, damage):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)).save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    if damage == "truncate":
        data = data[: int(rng.integers(0, len(data)))]
    elif damage == "flip":
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    elif damage == "garbage":
        data = bytearray(rng.bytes(int(rng.integers(0, 300))))
    path = tmp_path / f"image-{seed}.{fmt.lower()}"
    path.write_bytes(bytes(data))
    try:
        out = CLIPImageProcessor()(str(path), return_tensors="np")["pixel_values"]
    except ValueError as e:
        assert path.name in str(e), str(e)
        return
    assert out.shape == (1, 3, 224, 224) and np.isfinite(out).all()
