"""The three backends against each other: the same converted weights give the same numbers.

One random checkpoint per config is written once in each native format (pytorch_model.bin for
torch, tf_model.h5 for TF, flax_model.msgpack for Flax, each in a folder of its own), so the
suite also covers every reader and the layout rules between frameworks. All five classes, every
output field, with and without attention masks, fp32, max abs diff <= 1e-5.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from clip_core.config import CLIPConfig
from clip_core.weights import canonical_shapes, param_kind, save_state_dict
from tests.tiny_configs import CONFIGS, assert_close, clip_config, padded_texts, random_pixels

FORMAT_OF = {"torch": "pytorch", "tf": "tf", "flax": "flax"}
KINDS = ("clip", "text", "text_with_projection", "vision", "vision_with_projection")


def random_state(config: CLIPConfig, seed: int) -> dict[str, np.ndarray]:
    # Not clip_core.weights.random_state (N(0, 0.02), LayerNorms at 1 / 0): weights at 0.15 keep the
    # activations far from zero, so that 1e-5 is a tight bound, and LayerNorms off 1 / 0 show a
    # LayerNorm parameter a backend drops or swaps.
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in canonical_shapes(config).items():
        if name == "logit_scale":
            state[name] = np.asarray(config.logit_scale_init_value, np.float32)
        elif param_kind(name) == "layer_norm":
            base = 1.0 if name.endswith("weight") else 0.0
            state[name] = (base + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            state[name] = (0.15 * rng.standard_normal(shape)).astype(np.float32)
    return state


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request, tmp_path_factory):
    config = clip_config(request.param)
    state = random_state(config, seed=len(request.param))
    folders = {}
    for backend, fmt in FORMAT_OF.items():
        folder = tmp_path_factory.mktemp(f"{request.param}-{backend}")
        save_state_dict(state, folder, formats=(fmt,))
        config.save_pretrained(folder)
        assert not os.path.exists(folder / "model.safetensors")  # each backend reads its own format
        folders[backend] = folder
    # Captions of different lengths, the longest over every position.
    length = config.text_config.max_position_embeddings
    ids, mask = padded_texts(config.text_config, lengths=(length, 4, 7), seq=length, seed=1)
    return config, folders, ids, mask, random_pixels(config.vision_config, seed=2)


def _torch_class(kind):
    import clip_torch

    return {
        "clip": clip_torch.CLIPModel,
        "text": clip_torch.CLIPTextModel,
        "text_with_projection": clip_torch.CLIPTextModelWithProjection,
        "vision": clip_torch.CLIPVisionModel,
        "vision_with_projection": clip_torch.CLIPVisionModelWithProjection,
    }[kind]


def _tf_class(kind):
    import clip_tf

    return {
        "clip": clip_tf.TFCLIPModel,
        "text": clip_tf.TFCLIPTextModel,
        "text_with_projection": clip_tf.TFCLIPTextModelWithProjection,
        "vision": clip_tf.TFCLIPVisionModel,
        "vision_with_projection": clip_tf.TFCLIPVisionModelWithProjection,
    }[kind]


def _flax_class(kind):
    import clip_flax

    return {
        "clip": clip_flax.FlaxCLIPModel,
        "text": clip_flax.FlaxCLIPTextModel,
        "text_with_projection": clip_flax.FlaxCLIPTextModelWithProjection,
        "vision": clip_flax.FlaxCLIPVisionModel,
        "vision_with_projection": clip_flax.FlaxCLIPVisionModelWithProjection,
    }[kind]


def _inputs(kind, ids, mask, pixels, use_mask):
    text = {"input_ids": ids, "attention_mask": mask if use_mask else None}
    if kind == "clip":
        return {**text, "pixel_values": pixels, "return_loss": True}
    return text if kind.startswith("text") else {"pixel_values": pixels}


def flatten(output, prefix="") -> dict[str, np.ndarray]:
    """Every tensor of a (nested) output as numpy, keyed by its field path."""
    flat = {}
    for key, value in output.items():
        path = f"{prefix}{key}"
        if hasattr(value, "items"):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                flat[f"{path}[{i}]"] = np.asarray(v)
        else:
            flat[path] = np.asarray(value)
    return flat


def run_torch(kind, folder, inputs):
    import torch

    model = _torch_class(kind).from_pretrained(folder).eval()
    feed = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**feed, output_attentions=True, output_hidden_states=True)
    return {k: v for k, v in flatten({kk: _to_numpy_torch(vv) for kk, vv in out.items()}).items()}


def _to_numpy_torch(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy_torch(v) for v in value)
    if hasattr(value, "items"):
        return {k: _to_numpy_torch(v) for k, v in value.items()}
    return value


def run_tf(kind, folder, inputs):
    import tensorflow as tf

    model = _tf_class(kind).from_pretrained(folder)
    feed = {k: (tf.constant(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    return flatten(model(**feed, output_attentions=True, output_hidden_states=True))


def run_flax(kind, folder, inputs):
    model = _flax_class(kind).from_pretrained(folder)
    return flatten(model(**inputs, output_attentions=True, output_hidden_states=True))


@pytest.mark.parametrize("use_mask", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("kind", KINDS)
def test_backends_agree(case, kind, use_mask):
    config, folders, ids, mask, pixels = case
    inputs = _inputs(kind, ids, mask, pixels, use_mask)
    results = {
        "torch": run_torch(kind, folders["torch"], inputs),
        "tf": run_tf(kind, folders["tf"], inputs),
        "flax": run_flax(kind, folders["flax"], inputs),
    }
    reference = results["torch"]
    headline = {
        "clip": "logits_per_image",
        "text": "pooler_output",
        "text_with_projection": "text_embeds",
        "vision": "pooler_output",
        "vision_with_projection": "image_embeds",
    }
    assert headline[kind] in reference and any("attentions" in f for f in reference)
    for backend in ("tf", "flax"):
        got = results[backend]
        assert set(got) == set(reference), f"{backend} fields differ: {sorted(set(got) ^ set(reference))}"
        for field, want in reference.items():
            assert_close(got[field], want, f"{backend} {kind} {field} (vs torch)")
