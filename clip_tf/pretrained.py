"""The TensorFlow half of from_pretrained / save_pretrained, random init, input handling and Keras
(de)serialisation.

``TFCLIPPreTrainedModel`` is the base of the five public classes in clip_tf.modeling: variables by
canonical name (a Keras variable path spells it: ``canonical_name``), random initialisation by
clip_core's rules with Keras' generator, inputs turned into tensors and checked by
clip_core.validation (ids by value only when running eagerly), and ``get_config`` /
``from_config``. The framework-free flow is clip_core.pretrained.PretrainedModelMixin.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from clip_core import validation
from clip_core.layouts import canonical_name_from_tf, from_channels_last, to_channels_last
from clip_core.modeling_utils import as_config, init_rule
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

    def __init__(self, config, _do_init: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config, self.config_class)
        self._do_init = _do_init

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
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)

    @property
    def _default_save_signature(self):
        """What ``tf.saved_model.save(model, path)`` serves (Keras would guess float inputs from build
        shapes): clip_tf.export.default_signature, a flat dict of the model's float32 outputs."""
        from clip_tf.export import default_signature

        return default_signature(self)

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
    def _for_loading(cls, config, dtype=None, **kwargs):
        """``dtype``: a Keras dtype policy or its name ("float32", "bfloat16", "mixed_bfloat16")."""
        return cls(config, _do_init=False, **({"dtype": dtype} if dtype is not None else {}), **kwargs)
