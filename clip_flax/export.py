"""``jax.export`` of clip_flax models (``clip-export MODEL OUT --to jax``): serialised StableHLO.

OUT holds ``params.npz`` (every parameter, flat, keyed by its Flax path ``text_model/.../kernel``)
and one file per tower, ``text.jax`` / ``vision.jax`` (``full.jax``): ``jax.export.Exported``
serialised, a function ``(params, input_ids, attention_mask)`` / ``(params, pixel_values)`` /
``(params, input_ids, attention_mask, pixel_values)`` -> a dict of float32 arrays
(``text_embeds`` / ``image_embeds``, ``last_hidden_state`` with hidden_states; the full model's
``logits_per_image``, ``logits_per_text``, ``text_embeds``, ``image_embeds``). The batch axis and
the text length are symbolic (any batch; texts up to the context length). Ids are int32 (JAX's
default integer). Reloading needs only jax and numpy:

    >>> import jax, numpy as np
    >>> text = jax.export.deserialize(open("OUT/text.jax", "rb").read())
    >>> params = dict(np.load("OUT/params.npz"))
    >>> text_embeds = text.call(params, input_ids.astype(np.int32), attention_mask.astype(np.int32))["text_embeds"]

The weights are an argument rather than constants in the module: one copy for every tower, and
no 2 GiB limit on the serialised function. ``dtype`` sets the compute dtype (params stay float32).
"""

from __future__ import annotations

import io
import os
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import export as jax_export

import clip_core.export as core_export
from clip_core.encoder import dtype_name
from clip_core.export import FULL_OUTPUTS, ExportOptions
from clip_core.files import atomic_write_bytes
from clip_flax.modeling import FlaxCLIPModel, FlaxCLIPModule

FILES = {"text": "text.jax", "vision": "vision.jax", "full": "full.jax"}
PARAMS_FILE = "params.npz"


def flat_params(params) -> dict[str, np.ndarray]:
    """{"text_model/encoder/layers/0/.../kernel": array}: the params pytree, flat."""
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def channels_last(pixel_values):
    """Channels-first pixels (what exports take, as the wrapper classes) for the Linen module's channels-last."""
    return jnp.transpose(pixel_values, (0, 2, 3, 1))


def tower_function(config, tower: str, dtype=jnp.float32, hidden_states: bool = False):
    """The pure function a tower exports: (flat params, *inputs) -> dict of float32 arrays."""
    module = FlaxCLIPModule(config, dtype=dtype)

    def text(m, input_ids, attention_mask):
        out = m.text_model(input_ids, attention_mask, None, True)
        return {
            "text_embeds": m.text_projection(out.pooler_output),
            "last_hidden_state": out.last_hidden_state,
        }

    def vision(m, pixel_values):
        out = m.vision_model(channels_last(pixel_values), True)
        return {
            "image_embeds": m.visual_projection(out.pooler_output),
            "last_hidden_state": out.last_hidden_state,
        }

    def full(m, input_ids, attention_mask, pixel_values):
        out = m(input_ids, channels_last(pixel_values), attention_mask, return_dict=True)
        return {name: getattr(out, name) for name in FULL_OUTPUTS}

    method = {"text": text, "vision": vision, "full": full}[tower]

    def function(params, *inputs):
        out = module.apply({"params": traverse_util.unflatten_dict(params, sep="/")}, *inputs, method=method)
        if not hidden_states:
            out.pop("last_hidden_state", None)
        return {k: v.astype(jnp.float32) for k, v in out.items()}

    return function


def input_specs(config, tower: str) -> tuple:
    """Symbolic input shapes: (b, t) ids with t up to the context length, (b, C, H, W) pixels (n
    images for the full model, which takes as many images as it likes)."""
    vision = config.vision_config
    pixels = (vision.num_channels, vision.image_size, vision.image_size)
    if tower == "vision":
        (batch,) = jax_export.symbolic_shape("b")
        return (jax.ShapeDtypeStruct((batch, *pixels), jnp.float32),)
    limit = f"t <= {config.text_config.max_position_embeddings}"
    batch, length, images = jax_export.symbolic_shape("b, t, n", constraints=[limit])
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    if tower == "text":
        return ids, ids
    return ids, ids, jax.ShapeDtypeStruct((images, *pixels), jnp.float32)


# ---------------------------------------------------------------------------------------------
# The clip_core.export hooks


def load_model(model) -> FlaxCLIPModel:
    """A FlaxCLIPModel with float32 params: ``model`` itself, or loaded from a folder / Hub id."""
    if isinstance(model, (str, os.PathLike)):
        return FlaxCLIPModel.from_pretrained(model)
    if not isinstance(model, FlaxCLIPModel):
        raise TypeError(
            f"the JAX export takes a clip_flax FlaxCLIPModel or a folder, got {type(model).__name__}"
        )
    return model


def export(model: FlaxCLIPModel, folder: str, options: ExportOptions) -> dict[str, str]:
    params = flat_params(model.params)
    specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
    compute = getattr(jnp, dtype_name(options.dtype))
    files = {}
    for tower in options.towers:
        function = tower_function(model.config, tower, compute, options.hidden_states)
        exported = jax_export.export(jax.jit(function))(specs, *input_specs(model.config, tower))
        atomic_write_bytes(os.path.join(folder, FILES[tower]), exported.serialize())
        files[tower] = FILES[tower]
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    atomic_write_bytes(os.path.join(folder, PARAMS_FILE), buffer.getvalue())
    files["params"] = PARAMS_FILE
    return files


def features(model: FlaxCLIPModel, tower: str, batch: dict, options: ExportOptions) -> dict[str, np.ndarray]:
    """What the source model gives for ``batch`` through FlaxCLIPModule's public methods, jitted
    (the check's reference)."""
    jitted = _jitted(model)
    if tower == "full":
        out = jitted["full"](model.params, batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
        return {name: np.asarray(out[name], np.float32) for name in FULL_OUTPUTS}
    if tower == "text":
        out = {"text_embeds": jitted["text"](model.params, batch["input_ids"], batch["attention_mask"])}
    else:
        out = {"image_embeds": jitted["vision"](model.params, batch["pixel_values"])}
    if options.hidden_states:
        out["last_hidden_state"] = jitted[f"{tower}_hidden"](flat_params(model.params), *batch.values())
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


_REFERENCE = weakref.WeakKeyDictionary()  # model -> its jitted reference functions


def _jitted(model: FlaxCLIPModel) -> dict:
    if model not in _REFERENCE:
        module, config = FlaxCLIPModule(model.config), model.config

        def method(name, inputs=lambda *x: x):
            return jax.jit(
                lambda p, *x: module.apply({"params": p}, *inputs(*x), method=getattr(FlaxCLIPModule, name))
            )

        def full(p, ids, pixels, mask):
            out = module.apply({"params": p}, ids, channels_last(pixels), mask, return_dict=True)
            return {name: getattr(out, name) for name in FULL_OUTPUTS}

        def hidden(tower):
            function = tower_function(config, tower, hidden_states=True)
            return jax.jit(lambda p, *x: function(p, *x)["last_hidden_state"])

        _REFERENCE[model] = {
            "text": method("get_text_features"),
            "vision": method("get_image_features", lambda pixels: (channels_last(pixels),)),
            "full": jax.jit(full),
            "text_hidden": hidden("text"),
            "vision_hidden": hidden("vision"),
        }
    return _REFERENCE[model]


def runner(folder: str, options: ExportOptions):
    """(tower, batch) -> outputs of the serialised functions, deserialised by jax.export."""
    params = dict(np.load(os.path.join(folder, PARAMS_FILE)))
    functions = {}
    for tower in options.towers:
        with open(os.path.join(folder, FILES[tower]), "rb") as f:
            functions[tower] = jax_export.deserialize(bytearray(f.read()))

    def run(tower, batch):
        inputs = [np.asarray(v, np.int32 if k != "pixel_values" else np.float32) for k, v in batch.items()]
        return {k: np.asarray(v) for k, v in functions[tower].call(params, *inputs).items()}

    return run


def export_jax(model, out, towers=None, dtype=None, hidden_states=False, overwrite=False):
    """``clip_core.export.export(model, out, to="jax", ...)``: write, check, report."""
    return core_export.export(
        model, out, to="jax", towers=towers, dtype=dtype, hidden_states=hidden_states,
        overwrite=overwrite, progress=False,
    )  # fmt: skip
