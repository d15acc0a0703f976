"""The TensorFlow half of from_pretrained / save_pretrained, random init, input handling and Keras
(de)serialisation.

``TFCLIPPreTrainedModel`` is the base of the five public classes in clip_tf.modeling: variables by
canonical name (a Keras variable path spells it: ``canonical_name``), random initialisation by
clip_core's rules with Keras' generator, inputs turned into tensors and checked by
clip_core.validation (ids by value only when running eagerly), and ``get_config`` /
``from_config``. The framework-free flow is clip_core.pretrained.PretrainedModelMixin.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from clip_core import validation
from clip_core.layouts import canonical_name_from_tf, from_channels_last, to_channels_last
from clip_core.modeling_utils import as_config, check_attn_implementation, init_rule, is_embedding_table
from clip_core.pretrained import PretrainedModelMixin

SERIALIZATION_PACKAGE = "clip_tf"


def canonical_name(variable_path: str) -> str:
    """Keras variable path -> canonical name: ``x/text_model/.../q_proj/kernel`` -> ``text_model....q_proj.weight``."""
    name = canonical_name_from_tf(variable_path)
    if name == variable_path:
        raise ValueError(f"variable {variable_path!r} does not belong to a CLIP module")
    return name


def _static_shape(x):
    return None if x is None else tuple(x.shape.as_list())


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPPreTrainedModel(PretrainedModelMixin, keras.Model):
    """Weights by canonical name, random init as transformers', input handling, Keras (de)serialisation.

    ``_do_init=False`` builds the variables without drawing random values (from_pretrained fills them).
    """

    default_formats = ("tf",)  # tf_model.h5, as transformers' TF classes write and read (not safetensors)
    unsafe_format = "tf"
    framework = "tf"
    base_model_prefix = "clip"

    def __init__(self, config, _do_init: bool = True, attn_implementation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config, self.config_class)
        self._do_init = _do_init
        # One attention here, numerically "eager" (and "sdpa", a torch kernel of the same math).
        self.attn_implementation = check_attn_implementation(attn_implementation)

    def _child_kwargs(self, name: str) -> dict:
        return {"name": name, "dtype": self.dtype_policy}

    def _built(self):
        """Build every variable (a subclass calls this last in __init__), then draw them unless loading."""
        self.build(None)
        if self._do_init:
            self.init_weights()

    def init_weights(self) -> None:
        """Fresh random variables drawn with Keras' generator, by clip_core's init rules."""
        for name, var in self.canonical_variables().items():
            rule, value = init_rule(name, self.config)
            if rule == "normal":
                var.assign(keras.random.normal(var.shape, stddev=value, dtype=var.dtype))
            else:
                var.assign(tf.fill(var.shape, tf.cast(value, var.dtype)))

    def get_config(self):
        return {
            "config": self.config.to_dict(),
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config, **kwargs):
        """A new model from ``get_config()`` (Keras), or from a config: ``model.config``, its
        ``to_dict()``, or transformers' config (transformers' ``from_config``)."""
        if isinstance(config, Mapping) and isinstance(config.get("config"), Mapping):  # get_config()
            config = {**config, **kwargs}
            if isinstance(config.get("dtype"), dict):
                config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
            return cls(**config)
        return super().from_config(config, **kwargs)

    def __call__(self, *args, **kwargs):
        """Keras style too: ``model(inputs)`` with a dict of inputs (a processor's or tokenizer's output)."""
        if args and isinstance(args[0], Mapping):
            kwargs = {**args[0], **kwargs}
            args = args[1:]
        return super().__call__(*args, **kwargs)

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """Keras' compile; a tf-keras (Keras 2) optimizer gets an error that says what to pass instead."""
        module = type(optimizer).__module__
        if module.startswith(("tf_keras", "tensorflow.python.keras", "keras.optimizers.legacy")):
            raise TypeError(
                f"{type(self).__name__} is a Keras 3 model, but the optimizer {type(optimizer).__name__} is from "
                "tf-keras (Keras 2: what tf.keras is once transformers has set TF_USE_LEGACY_KERAS=1). Pass a "
                "Keras 3 optimizer: `import keras; keras.optimizers.Adam(...)`, or a name such as 'adam'"
            )
        return super().compile(optimizer, *args, **kwargs)

    # -- inputs ---------------------------------------------------------------------------

    def _text_inputs(self, config, input_ids, attention_mask, position_ids):
        tensors = tuple(
            None if x is None else tf.convert_to_tensor(x) for x in (input_ids, attention_mask, position_ids)
        )
        ids, id_range, integer = tensors[0], None, True
        if ids is not None and tf.executing_eagerly():  # value checks need concrete ids
            integer = ids.dtype.is_integer
            values = ids.numpy()
            if integer and values.size:
                id_range = (int(values.min()), int(values.max()))
        shapes = map(_static_shape, tensors)
        validation.check_text_inputs(config, *shapes, id_range=id_range, integer_ids=integer)
        return tensors

    def _pixel_inputs(self, config, pixel_values, interpolate_pos_encoding):
        pixel_values = None if pixel_values is None else tf.convert_to_tensor(pixel_values)
        validation.check_pixel_values(_static_shape(pixel_values), config, interpolate_pos_encoding)
        return pixel_values

    # -- weights by canonical name ---------------------------------------------------------

    def canonical_variables(self) -> dict:
        """{canonical name: Keras variable} for every parameter of the model."""
        return {canonical_name(v.path): v for v in self.weights}

    def canonical_state(self) -> dict[str, np.ndarray]:
        """The parameters as canonical (transformers PyTorch layout) numpy arrays."""
        return {
            name: from_channels_last(name, np.asarray(keras.ops.convert_to_numpy(var)))
            for name, var in self.canonical_variables().items()
        }

    def _assign_canonical_state(self, state) -> None:
        for name, var in self.canonical_variables().items():
            var.assign(to_channels_last(name, np.asarray(state[name])).astype(var.dtype))

    @classmethod
    def _framework_dtype(cls, dtype) -> str:
        """A Keras dtype policy name from a name, a policy, or a TF / torch / numpy dtype."""
        name = getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype
        name = str(name).removeprefix("torch.")
        if name not in _POLICY_NAMES:
            raise ValueError(f"dtype must be one of {_POLICY_NAMES} (Keras dtype policies), got {dtype!r}")
        return name

    @classmethod
    def _for_loading(cls, config, dtype=None, device_map=None, **kwargs):
        """``dtype``: a Keras dtype policy name ("float32", "bfloat16", "float16", "mixed_bfloat16", ...)."""
        if device_map is not None:
            raise ValueError(
                "device_map is a PyTorch option; in TensorFlow place the model with `with tf.device(...)`"
            )
        return cls(config, _do_init=False, **({"dtype": dtype} if dtype is not None else {}), **kwargs)

    # -- transformers' TFPreTrainedModel API ---------------------------------------------------

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count (``exclude_embeddings``: without the token and position embedding tables)."""
        return sum(
            int(np.prod(var.shape))
            for name, var in self.canonical_variables().items()
            if (var.trainable or not only_trainable) and not (exclude_embeddings and is_embedding_table(name))
        )

    def get_input_embeddings(self) -> keras.layers.Layer:
        """The token embedding layer (its table is ``.embeddings``; transformers' ``.weight``) of text
        models and TFCLIPModel, the patch embedding of vision models."""
        tower = self.text_model if getattr(self, "text_model", None) is not None else self.vision_model
        return getattr(tower.embeddings, "token_embedding", None) or tower.embeddings.patch_embedding

    def set_input_embeddings(self, value) -> None:
        """A new token table of the same shape (a tf.Variable or array, as transformers' TF models take)."""
        layer = self.get_input_embeddings()
        if not isinstance(layer, keras.layers.Embedding):
            raise ValueError(f"{type(self).__name__} has no token embedding to set")
        if tuple(value.shape) != tuple(layer.embeddings.shape):
            raise ValueError(
                f"set_input_embeddings: a table of shape {tuple(layer.embeddings.shape)} expected, got "
                f"{tuple(value.shape)} (a new vocabulary size: resize with clip_torch, then convert)"
            )
        layer.embeddings.assign(tf.cast(value, layer.embeddings.dtype))

    def save_pretrained(
        self,
        save_directory,
        formats=None,
        max_shard_size=None,
        saved_model=False,
        version=1,
        signatures=None,
        **kwargs,
    ) -> list[str]:
        """config.json and tf_model.h5 (transformers' TF default, which its TFCLIPModel reads; ``formats``
        or ``safe_serialization=True`` for model.safetensors). ``saved_model=True`` also exports a
        TensorFlow SavedModel to ``saved_model/<version>`` with the ``serving`` signature."""
        written = self._save(save_directory, self.canonical_state(), formats, max_shard_size, **kwargs)
        if saved_model and kwargs.get("is_main_process", True):
            target = os.path.join(save_directory, "saved_model", str(version))
            written.append(self.export_saved_model(target, signatures))
        return written

    # -- serving: tf.saved_model.save(model) and save_pretrained(saved_model=True) -----------------

    @property
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        """The serving inputs, as transformers': int32 ids and mask ``[batch, seq]``, float32
        channels-first ``pixel_values`` ``[batch, channels, size, size]``."""
        signature = {}
        if not self.model_kind.startswith("vision"):
            for name in ("input_ids", "attention_mask"):
                signature[name] = tf.TensorSpec([None, None], tf.int32, name=name)
        if not self.model_kind.startswith("text"):
            vision = getattr(self.config, "vision_config", self.config)
            shape = [None, vision.num_channels, vision.image_size, vision.image_size]
            signature["pixel_values"] = tf.TensorSpec(shape, tf.float32, name="pixel_values")
        return signature

    @property
    def serving(self):
        """A tf.function of a dict of inputs -> a dict of the output's tensors in float32 (the serving
        signature)."""
        if "_serving_function" not in self.__dict__:
            self._serving_function = tf.function(self._serve)
        return self._serving_function

    def _serve(self, inputs):
        output = self(**inputs, return_dict=True, training=False)
        return {key: tf.cast(value, tf.float32) for key, value in output.items() if tf.is_tensor(value)}

    def serving_signatures(self) -> dict:
        """{"serving_default": int32 inputs, "int64_serving": int64 inputs}, as transformers exports."""
        int64 = {
            k: tf.TensorSpec(v.shape, tf.int64 if v.dtype == tf.int32 else v.dtype, name=k)
            for k, v in self.input_signature.items()
        }
        return {
            "serving_default": self.serving.get_concrete_function(self.input_signature),
            "int64_serving": self.serving.get_concrete_function(int64),
        }

    @property
    def _default_save_signature(self):
        # What tf.saved_model.save(model) exports when given no signatures (Keras' own default
        # assumes a functional model's inputs and cannot trace this one).
        return self.serving.get_concrete_function(self.input_signature)

    def export_saved_model(self, path, signatures=None) -> str:
        """Write a TensorFlow SavedModel (serving signatures as ``serving_signatures``) to ``path``,
        built beside it and moved into place."""
        path = os.path.abspath(os.fspath(path))
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
        try:
            tf.saved_model.save(self, tmp, signatures=signatures or self.serving_signatures())
            if os.path.isdir(path):
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp)
        return path


_POLICY_NAMES = ("float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16")
