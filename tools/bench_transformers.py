"""transformers' own CLIP models on the bench context's weights: the reference rows.

Also the place the backend sections get their transformers counterparts from, so every section
compares against the same reference built the same way.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

_FOLDER: dict[int, str] = {}


def hf_torch_model(ctx, attn_implementation: str = "sdpa"):
    import torch
    import transformers

    config = transformers.CLIPConfig.from_dict(ctx.config.to_dict())
    model = transformers.CLIPModel(config)
    if model.config._attn_implementation != attn_implementation:  # the public switch, not the config field
        model.set_attn_implementation(attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    state = {k: torch.from_numpy(np.array(v)) for k, v in ctx.state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    return model.eval()


def hf_folder(ctx) -> str:
    """A transformers checkpoint folder of the context's weights (made once per process)."""
    if id(ctx) not in _FOLDER:
        folder = tempfile.mkdtemp(prefix="clip-bench-")
        hf_torch_model(ctx).save_pretrained(folder)
        _FOLDER[id(ctx)] = folder
    return _FOLDER[id(ctx)]


def hf_tf_model(ctx):
    from transformers import TFCLIPModel

    return TFCLIPModel.from_pretrained(hf_folder(ctx), from_pt=True)


def hf_flax_model(ctx):
    from transformers import FlaxCLIPModel

    return FlaxCLIPModel.from_pretrained(hf_folder(ctx), from_pt=True)


def _row(framework: str, what: str, theirs: str, seconds: float, batch: int) -> dict:
    unit = "img/s" if what == "image features" else "texts/s"
    return {
        "section": "transformers",
        "what": f"{what} ({framework})",
        "ours": None,
        "theirs": theirs,
        "unit": unit,
        "ours_value": None,
        "theirs_value": batch / seconds,
    }


def torch_rows(ctx) -> list[dict]:
    import torch

    model = hf_torch_model(ctx)
    pixels = torch.from_numpy(ctx.pixel_values)
    ids, mask = torch.from_numpy(ctx.input_ids), torch.from_numpy(ctx.attention_mask)
    name = "transformers CLIPModel (sdpa)"
    with torch.inference_mode():
        img = ctx.time(lambda: model.get_image_features(pixel_values=pixels))
        txt = ctx.time(lambda: model.get_text_features(input_ids=ids, attention_mask=mask))
    return [
        _row("torch", "image features", name, img, ctx.batch),
        _row("torch", "text features", name, txt, ctx.batch),
    ]


def tf_rows(ctx) -> list[dict]:
    import tensorflow as tf

    model = hf_tf_model(ctx)
    image_fn = tf.function(lambda p: model.get_image_features(pixel_values=p))
    text_fn = tf.function(lambda i, m: model.get_text_features(input_ids=i, attention_mask=m))
    pixels = tf.constant(ctx.pixel_values)
    ids, mask = tf.constant(ctx.input_ids), tf.constant(ctx.attention_mask)
    name = "transformers TFCLIPModel (tf.function)"
    img = ctx.time(lambda: image_fn(pixels).numpy())
    txt = ctx.time(lambda: text_fn(ids, mask).numpy())
    return [
        _row("tf", "image features", name, img, ctx.batch),
        _row("tf", "text features", name, txt, ctx.batch),
    ]


def flax_rows(ctx) -> list[dict]:
    import jax

    model = hf_flax_model(ctx)
    image_fn = jax.jit(lambda params, p: model.get_image_features(p, params=params))
    text_fn = jax.jit(lambda params, i, m: model.get_text_features(i, attention_mask=m, params=params))
    name = "transformers FlaxCLIPModel (jit)"
    img = ctx.time(lambda: image_fn(model.params, ctx.pixel_values).block_until_ready())
    txt = ctx.time(lambda: text_fn(model.params, ctx.input_ids, ctx.attention_mask).block_until_ready())
    return [
        _row("flax", "image features", name, img, ctx.batch),
        _row("flax", "text features", name, txt, ctx.batch),
    ]


def rows(ctx) -> list[dict]:
    out = []
    for make in (torch_rows, tf_rows, flax_rows):
        out.extend(make(ctx))
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    return out
