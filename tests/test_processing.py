"""CLIPProcessor against transformers 4.57.6's CLIPProcessor (same tokenizer, our image processor vs theirs)."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
from PIL import Image

import clip_core.processing as processing
from clip_core.image_processing import CLIPImageProcessor
from clip_core.processing import CLIPProcessor

VOCAB_GZ = os.path.join(os.path.dirname(processing.__file__), "data", "bpe_simple_vocab_16e6.txt.gz")
TEXTS = ["a photo of a cat", "two dogs playing in the snow, far away", "x"]


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory, hf):
    """vocab.json + merges.txt in transformers' format, built from OpenAI's bundled BPE file."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    merges = gzip.open(VOCAB_GZ).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_folder):
    """Ours: the processor under test wraps our tokenizer."""
    from clip_core.tokenization_fast import CLIPTokenizerFast

    return CLIPTokenizerFast.from_pretrained(tokenizer_folder)


@pytest.fixture(scope="module")
def hf_tokenizer(hf, tokenizer_folder):
    """transformers' fast tokenizer on the same vocabulary, for transformers' processor."""
    return hf.CLIPTokenizerFast.from_pretrained(str(tokenizer_folder))


@pytest.fixture(scope="module")
def images():
    data = pytest.importorskip("skimage.data")
    return [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee()).convert("L")]


def assert_same_outputs(ours, theirs):
    assert set(ours) == set(theirs), (set(ours), set(theirs))
    for key in theirs:
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        assert a.shape == b.shape, key
        if key == "pixel_values":
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, b)


def test_text_and_images_equal_transformers(hf, tokenizer, hf_tokenizer, images):
    ours = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    theirs = hf.CLIPProcessor(image_processor=hf.CLIPImageProcessor(), tokenizer=hf_tokenizer)
    kwargs = dict(text=TEXTS, images=images, return_tensors="np", padding=True)
    out = ours(**kwargs)
    assert_same_outputs(out, theirs(**kwargs))
    assert out.pixel_values.shape == (2, 3, 224, 224) and out.input_ids.shape[0] == 3
    # One modality at a time, and tokenizer kwargs passed through.
    assert_same_outputs(
        ours(text=TEXTS, return_tensors="np", padding="max_length", max_length=12, truncation=True),
        theirs(text=TEXTS, return_tensors="np", padding="max_length", max_length=12, truncation=True),
    )
    assert_same_outputs(ours(images=images, return_tensors="np"), theirs(images=images, return_tensors="np"))


def test_image_kwargs_go_to_image_processor(hf, tokenizer, hf_tokenizer, images):
    ours = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    theirs = hf.CLIPProcessor(image_processor=hf.CLIPImageProcessor(), tokenizer=hf_tokenizer)
    kwargs = dict(images=images, text="a cat", return_tensors="np", crop_size={"height": 64, "width": 64})
    out = ours(**kwargs)
    assert out.pixel_values.shape == (2, 3, 64, 64)
    assert_same_outputs(out, theirs(**kwargs))


def test_return_tensors_pt(tokenizer, images):
    torch = pytest.importorskip("torch")
    out = CLIPProcessor(CLIPImageProcessor(), tokenizer)(
        text=TEXTS, images=images, return_tensors="pt", padding=True
    )
    assert all(isinstance(out[k], torch.Tensor) for k in ("input_ids", "attention_mask", "pixel_values"))
    assert out.to("cpu").pixel_values.dtype == torch.float32


def test_decode_passthrough(tokenizer):
    processor = CLIPProcessor(CLIPImageProcessor(), tokenizer)
    ids = tokenizer(TEXTS).input_ids
    assert processor.batch_decode(ids, skip_special_tokens=True) == tokenizer.batch_decode(
        ids, skip_special_tokens=True
    )
    assert processor.decode(ids[0]) == tokenizer.decode(ids[0])


def test_needs_an_input(tokenizer):
    with pytest.raises(ValueError, match="text, images"):
        CLIPProcessor(CLIPImageProcessor(), tokenizer)()


def test_save_pretrained_is_read_by_transformers(hf, tokenizer, images, tmp_path):
    ours = CLIPProcessor(CLIPImageProcessor(crop_size=200), tokenizer)
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file() and (tmp_path / "vocab.json").is_file()
    theirs = hf.CLIPProcessor.from_pretrained(tmp_path)
    kwargs = dict(text=TEXTS, images=images, return_tensors="np", padding=True)
    assert_same_outputs(ours(**kwargs), theirs(**kwargs))

    reloaded = CLIPProcessor.from_pretrained(tmp_path)
    assert reloaded.image_processor.crop_size == {"height": 200, "width": 200}
    assert_same_outputs(reloaded(**kwargs), theirs(**kwargs))


def test_from_pretrained_reads_transformers_folder_with_our_tokenizer(hf, hf_tokenizer, images, tmp_path):
    theirs = hf.CLIPProcessor(image_processor=hf.CLIPImageProcessor(), tokenizer=hf_tokenizer)
    theirs.save_pretrained(tmp_path)
    ours = CLIPProcessor.from_pretrained(tmp_path)
    kwargs = dict(text=TEXTS, images=images, return_tensors="np", padding=True)
    assert_same_outputs(ours(**kwargs), theirs(**kwargs))


def test_feature_extractor_argument_is_deprecated(tokenizer):
    with pytest.warns(FutureWarning):
        processor = CLIPProcessor(feature_extractor=CLIPImageProcessor(), tokenizer=tokenizer)
    assert isinstance(processor.image_processor, CLIPImageProcessor)
