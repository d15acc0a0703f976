"""The encoder protocol: each backend's encoder equals its model's normalised features, and the
three backends agree; padding to compile buckets changes nothing; a missing backend is a clear error."""

import os

import numpy as np
import pytest

from clip_core.encoder import BACKENDS, Encoder, bucket, load_encoder, pad_tokens
from tests.tiny_configs import LOGIT_SCALES, assert_close, padded_texts, random_pixels


def inputs(config):
    ids, mask = padded_texts(config.text_config)
    return ids, mask, random_pixels(config.vision_config)


def reference(folder):
    """Normalised features from the torch model itself, row by row (no padding anywhere)."""
    import torch

    from clip_torch import CLIPModel

    model = CLIPModel.from_pretrained(folder)
    ids, mask, pixels = inputs(model.config)
    with torch.no_grad():
        text = model.get_text_features(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        image = model.get_image_features(torch.from_numpy(pixels)).numpy()
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return unit(text), unit(image)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_encoder_equals_normalised_features(reference_folder, backend):
    folder = reference_folder
    encoder = load_encoder(folder, backend)
    assert isinstance(encoder, Encoder)
    ids, mask, pixels = inputs(encoder.config)
    text, image = reference(folder)
    got_text, got_image = encoder.encode_texts(ids, mask), encoder.encode_images(pixels)
    assert got_text.dtype == got_image.dtype == np.float32
    assert_close(got_text, text, f"{backend} encode_texts")
    assert_close(got_image, image, f"{backend} encode_images")
    # One row at a time (other buckets, other padding) gives the same rows.
    assert_close(encoder.encode_texts(ids[1:2], mask[1:2]), text[1:2], f"{backend} single text")
    assert_close(encoder.encode_images(pixels[2:]), image[2:], f"{backend} single image")
    assert encoder.logit_scale == pytest.approx(np.exp(LOGIT_SCALES[os.path.basename(folder)]), rel=1e-6)


def test_padding_helpers():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    ids = np.array([[5, 6, 7]]), np.array([[1, 1, 0]])
    padded_ids, padded_mask = pad_tokens(*ids, multiple=8, limit=6)
    np.testing.assert_array_equal(padded_ids, [[5, 6, 7, 7, 7, 7]])
    np.testing.assert_array_equal(padded_mask, [[1, 1, 0, 0, 0, 0]])


def test_unknown_backend_and_missing_framework(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'mxnet'"):
        load_encoder("x", "mxnet")
    import clip_core.encoder as encoder_module

    monkeypatch.setitem(encoder_module.BACKENDS, "torch", ("no_such_module_xyz", "X", "torch"))
    with pytest.raises(ImportError, match=r"pip install 'clip-multibackend\[torch\]'"):
        load_encoder("x", "torch")
