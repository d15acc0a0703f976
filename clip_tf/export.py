"""TF SavedModel and TFLite exports of clip_tf models (``clip-export --to savedmodel|tflite``).

SavedModel: ``OUT/1/`` (TF Serving's layout: a numbered version under the model folder) with flat
serving signatures, each a tf.function over dynamic batch (and sequence) axes returning a dict of
float32 tensors:

- ``get_text_features(input_ids, attention_mask)`` -> ``text_embeds`` [, ``last_hidden_state``]
- ``get_image_features(pixel_values)`` -> ``image_embeds`` [, ``last_hidden_state``]
- ``serving_default(input_ids, attention_mask, pixel_values)`` -> ``logits_per_image``,
  ``logits_per_text``, ``text_embeds``, ``image_embeds`` (the full model, ``--towers full``)

It reloads with TensorFlow alone: ``tf.saved_model.load("OUT/1").signatures["get_text_features"]``.
``tf.saved_model.save(model, path)`` on a model itself works too: its default signature is the
model's ``serving`` (clip_tf.pretrained: int32 ids as transformers' ``serving_default``).

TFLite: ``text.tflite`` and ``vision.tflite``, converted from the same tf.functions with TFLite's
built-in ops only (so ``ai_edge_litert.interpreter.Interpreter`` runs them with no Flex delegate);
fp16 stores float16 weights, int8 is TFLite's dynamic-range quantisation (int8 weights).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

import clip_core.export as core_export
from clip_core.encoder import dtype_name
from clip_core.export import ExportOptions
from clip_tf.modeling import TFCLIPModel, apply_dense

SAVEDMODEL_VERSION = "1"
SIGNATURES = {"text": "get_text_features", "vision": "get_image_features", "full": "serving_default"}
TFLITE_FILES = {"text": "text.tflite", "vision": "vision.tflite"}
# Keras dtype policies by compute dtype; reduced precision keeps float32 variables.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _text_spec():
    return (
        tf.TensorSpec([None, None], tf.int64, name="input_ids"),
        tf.TensorSpec([None, None], tf.int64, name="attention_mask"),
    )


def _image_spec(config):
    vision = getattr(config, "vision_config", config)  # a CLIPConfig or a tower's CLIPVisionConfig
    shape = [None, vision.num_channels, vision.image_size, vision.image_size]
    return (tf.TensorSpec(shape, tf.float32, name="pixel_values"),)


def serving_functions(model, towers=("text", "vision", "full"), hidden_states: bool = False) -> dict:
    """{signature name: tf.function with an input signature} for ``towers`` of a TFCLIPModel."""
    functions = {}

    def outputs(out, projection, name):  # a tower's flat float32 outputs
        result = {name: apply_dense(projection, out.pooler_output)}
        if hidden_states:
            result["last_hidden_state"] = out.last_hidden_state
        return {k: tf.cast(v, tf.float32) for k, v in result.items()}

    if "text" in towers:

        @tf.function(input_signature=_text_spec())
        def get_text_features(input_ids, attention_mask):
            return outputs(model.text_model(input_ids, attention_mask), model.text_projection, "text_embeds")

        functions[SIGNATURES["text"]] = get_text_features

    if "vision" in towers:

        @tf.function(input_signature=_image_spec(model.config))
        def get_image_features(pixel_values):
            return outputs(model.vision_model(pixel_values), model.visual_projection, "image_embeds")

        functions[SIGNATURES["vision"]] = get_image_features

    if "full" in towers:

        @tf.function(input_signature=_text_spec() + _image_spec(model.config))
        def serving_default(input_ids, attention_mask, pixel_values):
            out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
            return {name: tf.cast(getattr(out, name), tf.float32) for name in core_export.FULL_OUTPUTS}

        functions[SIGNATURES["full"]] = serving_default
    return functions


# ---------------------------------------------------------------------------------------------
# The clip_core.export hooks


def load_model(model) -> TFCLIPModel:
    """A float32 TFCLIPModel: ``model`` itself, or loaded from a folder / Hub id."""
    if isinstance(model, (str, os.PathLike)):
        return TFCLIPModel.from_pretrained(model)
    if not isinstance(model, TFCLIPModel):
        raise TypeError(f"the TF exports take a clip_tf TFCLIPModel or a folder, got {type(model).__name__}")
    return model


def in_dtype(model: TFCLIPModel, dtype: str) -> TFCLIPModel:
    """``model`` computing in ``dtype`` ("fp32", "bf16", "fp16"): a copy with that Keras policy."""
    policy = POLICIES[dtype_name(dtype)]
    if model.dtype_policy.name == policy:
        return model
    copy = TFCLIPModel(model.config, _do_init=False, dtype=policy)
    copy.load_canonical_state(model.canonical_state())
    return copy


def export(model: TFCLIPModel, folder: str, options: ExportOptions) -> dict[str, str]:
    if options.to == "savedmodel":
        model = in_dtype(model, options.dtype)
        return save_savedmodel(model, folder, options.towers, options.hidden_states)
    return {  # TFLite's fp16 is float16 weights, computed in float32: the model stays float32
        tower: save_tflite(model, os.path.join(folder, TFLITE_FILES[tower]), tower, options)
        for tower in options.towers
    }


def save_savedmodel(model, folder: str, towers, hidden_states: bool = False) -> dict[str, str]:
    """``folder/1/``: a SavedModel of ``towers``' signatures; {tower: "1"}."""
    module = tf.Module()
    module.weights = list(model.weights)  # the variables alone: no Keras object in the SavedModel
    functions = serving_functions(model, towers, hidden_states)
    tf.saved_model.save(module, os.path.join(folder, SAVEDMODEL_VERSION), signatures=functions)
    return dict.fromkeys(towers, SAVEDMODEL_VERSION)


def save_tflite(model, path: str, tower: str, options: ExportOptions) -> str:
    """One tower as a TFLite flatbuffer at ``path`` (built-in ops only); returns its file name.

    The tower's tf.function is frozen first (variables become constants): converted as it is, the
    Keras variables would stay resource variables that the interpreter never initialises."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = serving_functions(model, (tower,), options.hidden_states)[SIGNATURES[tower]]
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    names = sorted(function.get_concrete_function().structured_outputs)

    @tf.function(input_signature=function.input_signature)
    def constant_function(*inputs):  # the frozen graph under the signature's names and outputs
        return dict(zip(names, frozen(*inputs)))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [constant_function.get_concrete_function()], tf.Module()
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if options.dtype == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options.quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights
    with open(path, "wb") as f:
        f.write(converter.convert())
    return os.path.basename(path)


def features(model: TFCLIPModel, tower: str, batch: dict, options: ExportOptions) -> dict[str, np.ndarray]:
    """What the source model gives for ``batch`` through its public methods (the check's reference)."""
    inputs = {k: tf.constant(v) for k, v in batch.items()}
    out = core_export.source_outputs(model, tower, inputs, options.hidden_states)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def runner(folder: str, options: ExportOptions):
    """(tower, batch) -> outputs of the export, loaded back by TensorFlow (SavedModel) or LiteRT."""
    if options.to == "savedmodel":
        loaded = tf.saved_model.load(os.path.join(folder, SAVEDMODEL_VERSION))

        def run_savedmodel(tower, batch):
            out = loaded.signatures[SIGNATURES[tower]](**{k: tf.constant(v) for k, v in batch.items()})
            return {k: v.numpy() for k, v in out.items()}

        return run_savedmodel
    runners = {tower: tflite_runner(os.path.join(folder, TFLITE_FILES[tower])) for tower in options.towers}
    return lambda tower, batch: runners[tower](batch)


def tflite_runner(path: str, threads: int | None = None):
    """batch -> outputs of the TFLite file at ``path``, run by ai-edge-litert's interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError(
            "running TFLite files needs ai-edge-litert; install it with: pip install 'clip-multibackend[tflite]'"
        ) from None
    interpreter = Interpreter(model_path=path, num_threads=threads or os.cpu_count())
    signature = interpreter.get_signature_runner()
    return lambda batch: {k: np.asarray(v) for k, v in signature(**batch).items()}


def export_savedmodel(model, out, towers=None, dtype=None, hidden_states=False, overwrite=False):
    """``clip_core.export.export(model, out, to="savedmodel", ...)``: write, check, report."""
    return core_export.export(
        model, out, to="savedmodel", towers=towers, dtype=dtype, hidden_states=hidden_states,
        overwrite=overwrite, progress=False,
    )  # fmt: skip


def export_tflite(model, out, towers=None, dtype=None, quantize=None, hidden_states=False, overwrite=False):
    """``clip_core.export.export(model, out, to="tflite", ...)``: write, check, report."""
    return core_export.export(
        model, out, to="tflite", towers=towers, dtype=dtype, quantize=quantize,
        hidden_states=hidden_states, overwrite=overwrite, progress=False,
    )  # fmt: skip
