"""CLIP on TensorFlow with Keras 3: TFCLIPModel, TFCLIPTextModel(WithProjection), TFCLIPVisionModel(WithProjection).

The building blocks mirror clip_torch/modeling.py in the same order and with the same names:
activations, embeddings, attention, MLP, encoder layer, encoder, text transformer, vision
transformer, public classes. Every Keras layer is named after its canonical (transformers PyTorch)
module, so a variable's Keras path spells its canonical name:
``tfclip_model/text_model/encoder/layers.0/self_attn/q_proj/kernel`` is
``text_model.encoder.layers.0.self_attn.q_proj.weight`` (see ``canonical_name``).

We import ``keras`` (Keras 3), never ``tf.keras``: once transformers' TF models are imported,
TF_USE_LEGACY_KERAS=1 makes ``tf.keras`` the legacy tf-keras package.
"""

from __future__ import annotations

import math
import os

_KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "")
if _KERAS_BACKEND not in ("", "tensorflow"):
    raise ImportError(
        f"clip_tf runs on Keras 3 with the TensorFlow backend, but KERAS_BACKEND={_KERAS_BACKEND!r}; "
        "unset it or set KERAS_BACKEND=tensorflow before importing keras (use clip_flax or clip_torch "
        "for the other frameworks)"
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() != "tensorflow":  # e.g. "backend" set in ~/.keras/keras.json
    raise ImportError(
        f"clip_tf needs Keras 3 on the TensorFlow backend, but keras runs on {keras.backend.backend()!r}; "
        "set KERAS_BACKEND=tensorflow"
    )

from clip_core import validation  # noqa: E402
from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig  # noqa: E402
from clip_core.interpolation import bicubic_resize_matrix  # noqa: E402
from clip_core.outputs import (  # noqa: E402
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
)
from clip_core.pretrained import load_pretrained, save_pretrained  # noqa: E402
from clip_core.weights import from_channels_last, to_channels_last  # noqa: E402

SERIALIZATION_PACKAGE = "clip_tf"

# ---------------------------------------------------------------------------------------------
# Activations


def quick_gelu(x):
    return x * tf.sigmoid(1.702 * x)


def gelu_tanh(x):
    return tf.nn.gelu(x, approximate=True)


def gelu_fast(x):
    # transformers' "gelu_fast": the tanh approximation written with a rounded sqrt(2/pi).
    return 0.5 * x * (1.0 + tf.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "relu": tf.nn.relu,
}


# ---------------------------------------------------------------------------------------------
# Config plumbing shared by the layers (get_config / from_config)

_CONFIG_CLASSES = {cls.model_type: cls for cls in (CLIPConfig, CLIPTextConfig, CLIPVisionConfig)}


def _as_config(config, expected):
    """A config object from itself or from its to_dict() (what get_config stores)."""
    if isinstance(config, dict) and config.get("model_type") in _CONFIG_CLASSES:
        config = _CONFIG_CLASSES[config["model_type"]].from_dict(config)
    elif isinstance(config, dict) and isinstance(expected, type):
        config = expected.from_dict(config)
    if not isinstance(config, expected):
        names = " or ".join(c.__name__ for c in (expected if isinstance(expected, tuple) else (expected,)))
        raise TypeError(f"expected a {names}, got {type(config).__name__}")
    return config


class _ConfiguredLayer(keras.layers.Layer):
    """A layer built from a clip_core config; serialises as that config's dict."""

    # The blocks shared by both towers take either tower's config.
    config_class: type | tuple[type, ...] = (CLIPTextConfig, CLIPVisionConfig)

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = _as_config(config, self.config_class)

    def _child_kwargs(self, name: str) -> dict:
        # Keras 3 sublayers do not inherit their parent's dtype policy: pass it on.
        return {"name": name, "dtype": self.dtype_policy}

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


def _normal(std: float):
    return keras.initializers.RandomNormal(stddev=std)


def _dense(layer: _ConfiguredLayer, units: int, name: str, std: float, use_bias: bool = True):
    return keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer=_normal(std), **layer._child_kwargs(name)
    )


def _layer_norm(layer: _ConfiguredLayer, name: str):
    return keras.layers.LayerNormalization(epsilon=layer.config.layer_norm_eps, **layer._child_kwargs(name))


# The layers hold the variables (their paths are the canonical names); these evaluate them. Inside
# tf.function a Keras Dense on a rank-3 input becomes a tensordot (shape arithmetic around the
# matmul) followed by a plain Add that Grappler does not fuse, and LayerNormalization adds casts and
# broadcasts; the ops below are what those layers compute, with nothing around them.


def _value(variable, dtype):
    # The variable's value in the compute dtype (a no-op cast unless a mixed policy is in use).
    return tf.cast(variable.value, dtype)


def apply_dense(dense: keras.layers.Dense, x):
    """``dense(x)`` for x of any rank >= 2: one 2-D MatMul + BiasAdd, which Grappler fuses into one op."""
    kernel = _value(dense.kernel, x.dtype)
    rank = x.shape.rank
    if rank != 2:
        batch_dims = tf.shape(x)[:-1]
        x = tf.reshape(x, (-1, kernel.shape[0]))
    y = tf.matmul(x, kernel)
    if dense.use_bias:
        y = tf.nn.bias_add(y, _value(dense.bias, y.dtype))
    if rank != 2:
        y = tf.reshape(y, tf.concat([batch_dims, [kernel.shape[1]]], axis=0))
    return y


def apply_layer_norm(norm: keras.layers.LayerNormalization, x):
    """``norm(x)`` over the last axis, with gamma and beta folded into one scale and one shift."""
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    scale = tf.math.rsqrt(variance + norm.epsilon) * _value(norm.gamma, x.dtype)
    return x * scale + (_value(norm.beta, x.dtype) - mean * scale)


# ---------------------------------------------------------------------------------------------
# Embeddings


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPTextEmbeddings(_ConfiguredLayer):
    config_class = CLIPTextConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        std = cfg.initializer_range * cfg.initializer_factor
        self.token_embedding = keras.layers.Embedding(
            cfg.vocab_size,
            cfg.hidden_size,
            embeddings_initializer=_normal(std),
            **self._child_kwargs("token_embedding"),
        )
        self.position_embedding = keras.layers.Embedding(
            cfg.max_position_embeddings,
            cfg.hidden_size,
            embeddings_initializer=_normal(std),
            **self._child_kwargs("position_embedding"),
        )

    def build(self, input_shape=None):
        self.token_embedding.build(None)
        self.position_embedding.build(None)

    def call(self, input_ids, position_ids=None):
        if position_ids is None:
            position_ids = tf.range(tf.shape(input_ids)[-1])[None, :]
        tokens = tf.gather(self.token_embedding.embeddings, input_ids)
        positions = tf.gather(self.position_embedding.embeddings, position_ids)
        return tf.cast(tokens + positions, self.compute_dtype)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPVisionEmbeddings(_ConfiguredLayer):
    """Patches (a strided conv) + class token + position embeddings, from channels-first pixels."""

    config_class = CLIPVisionConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        std = cfg.initializer_range * cfg.initializer_factor
        self.patch_embedding = keras.layers.Conv2D(
            cfg.hidden_size,
            kernel_size=cfg.patch_size,
            strides=cfg.patch_size,
            padding="valid",
            data_format="channels_last",
            use_bias=False,
            kernel_initializer=_normal(std),
            **self._child_kwargs("patch_embedding"),
        )
        self.position_embedding = keras.layers.Embedding(
            cfg.num_patches + 1,
            cfg.hidden_size,
            embeddings_initializer=_normal(std),
            **self._child_kwargs("position_embedding"),
        )

    def build(self, input_shape=None):
        cfg = self.config
        self.class_embedding = self.add_weight(
            shape=(cfg.hidden_size,),
            initializer=_normal(cfg.hidden_size**-0.5 * cfg.initializer_factor),
            name="class_embedding",
        )
        self.patch_embedding.build((None, None, None, cfg.num_channels))
        self.position_embedding.build(None)

    def call(self, pixel_values, interpolate_pos_encoding=False):
        # Channels-first in (like transformers); TF's CPU convolutions want channels-last.
        pixels = tf.transpose(tf.cast(pixel_values, self.compute_dtype), (0, 2, 3, 1))
        patches = self.patch_embedding(pixels)  # [batch, grid_h, grid_w, hidden]
        grid_h, grid_w = patches.shape[1], patches.shape[2]
        batch = tf.shape(patches)[0]
        patches = tf.reshape(patches, (batch, -1, self.config.hidden_size))
        class_token = tf.broadcast_to(
            tf.cast(self.class_embedding, self.compute_dtype), (batch, 1, self.config.hidden_size)
        )
        positions = tf.cast(self.position_embedding.embeddings, self.compute_dtype)
        if interpolate_pos_encoding:
            positions = self.resized_positions(positions, grid_h, grid_w)
        return tf.concat([class_token, patches], axis=1) + positions[None]

    def resized_positions(self, positions, grid_h, grid_w):
        """Position embeddings for a grid_h x grid_w patch grid: the trained grid, resized bicubically."""
        if grid_h is None or grid_w is None:
            raise ValueError(
                "interpolate_pos_encoding needs the image height and width known when the model is traced; "
                "give tf.function an input_signature with static height and width"
            )
        side = math.isqrt(self.config.num_patches)
        if (grid_h, grid_w) == (side, side):
            return positions
        rows = tf.constant(bicubic_resize_matrix(side, grid_h), dtype=positions.dtype)
        cols = tf.constant(bicubic_resize_matrix(side, grid_w), dtype=positions.dtype)
        grid = tf.reshape(positions[1:], (side, side, -1))
        resized = tf.einsum("oi,ijd,pj->opd", rows, grid, cols)
        return tf.concat([positions[:1], tf.reshape(resized, (grid_h * grid_w, -1))], axis=0)


# ---------------------------------------------------------------------------------------------
# Attention, MLP, encoder layer, encoder


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPAttention(_ConfiguredLayer):
    """Multi-head self-attention; ``attention_bias`` is added to the scores (0 or a large negative)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.scale = self.head_dim**-0.5
        in_std = cfg.hidden_size**-0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * cfg.initializer_factor
        out_std = cfg.hidden_size**-0.5 * cfg.initializer_factor
        self.k_proj = _dense(self, cfg.hidden_size, "k_proj", in_std)
        self.v_proj = _dense(self, cfg.hidden_size, "v_proj", in_std)
        self.q_proj = _dense(self, cfg.hidden_size, "q_proj", in_std)
        self.out_proj = _dense(self, cfg.hidden_size, "out_proj", out_std)
        self.dropout = keras.layers.Dropout(cfg.attention_dropout, **self._child_kwargs("dropout"))

    def build(self, input_shape=None):
        for proj in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            proj.build((None, None, self.config.hidden_size))

    def _split_heads(self, x, batch):
        # [batch, seq, hidden] -> [batch, heads, seq, head_dim]: one reshape, one transpose.
        return tf.transpose(tf.reshape(x, (batch, -1, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def call(self, hidden_states, attention_bias=None, output_attentions=False, training=False):
        batch = tf.shape(hidden_states)[0]
        # Scale the queries [seq, head_dim] rather than the scores [seq, seq]: fewer multiplies.
        query = self._split_heads(apply_dense(self.q_proj, hidden_states) * self.scale, batch)
        key = self._split_heads(apply_dense(self.k_proj, hidden_states), batch)
        value = self._split_heads(apply_dense(self.v_proj, hidden_states), batch)
        scores = tf.matmul(query, key, transpose_b=True)
        if attention_bias is not None:
            scores = scores + attention_bias
        if scores.dtype == tf.float32:
            probs = tf.nn.softmax(scores, axis=-1)
        else:
            # Softmax in float32 under a bf16/fp16 policy (as transformers does).
            probs = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), scores.dtype)
        if training and self.config.attention_dropout > 0:
            probs_used = self.dropout(probs, training=training)
        else:
            probs_used = probs
        context = tf.matmul(probs_used, value)
        context = tf.reshape(tf.transpose(context, (0, 2, 1, 3)), (batch, -1, self.config.hidden_size))
        return apply_dense(self.out_proj, context), (probs if output_attentions else None)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPMLP(_ConfiguredLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        factor = cfg.initializer_factor
        self.activation = ACTIVATIONS[cfg.hidden_act]
        self.fc1 = _dense(self, cfg.intermediate_size, "fc1", (2 * cfg.hidden_size) ** -0.5 * factor)
        in_std = cfg.hidden_size**-0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * factor
        self.fc2 = _dense(self, cfg.hidden_size, "fc2", in_std)

    def build(self, input_shape=None):
        self.fc1.build((None, None, self.config.hidden_size))
        self.fc2.build((None, None, self.config.intermediate_size))

    def call(self, hidden_states):
        return apply_dense(self.fc2, self.activation(apply_dense(self.fc1, hidden_states)))


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPEncoderLayer(_ConfiguredLayer):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.self_attn = CLIPAttention(self.config, **self._child_kwargs("self_attn"))
        self.layer_norm1 = _layer_norm(self, "layer_norm1")
        self.mlp = CLIPMLP(self.config, **self._child_kwargs("mlp"))
        self.layer_norm2 = _layer_norm(self, "layer_norm2")

    def build(self, input_shape=None):
        shape = (None, None, self.config.hidden_size)
        self.self_attn.build(shape)
        self.layer_norm1.build(shape)
        self.mlp.build(shape)
        self.layer_norm2.build(shape)

    def call(self, hidden_states, attention_bias=None, output_attentions=False, training=False):
        attended, probs = self.self_attn(
            apply_layer_norm(self.layer_norm1, hidden_states),
            attention_bias=attention_bias,
            output_attentions=output_attentions,
            training=training,
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(apply_layer_norm(self.layer_norm2, hidden_states))
        return hidden_states, probs


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPEncoder(_ConfiguredLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        # Named "layers.<i>" so that variable paths read like the canonical names.
        self.layers = [
            CLIPEncoderLayer(self.config, **self._child_kwargs(f"layers.{i}"))
            for i in range(self.config.num_hidden_layers)
        ]

    def build(self, input_shape=None):
        for layer in self.layers:
            layer.build(None)

    def call(
        self,
        hidden_states,
        attention_bias=None,
        output_attentions=False,
        output_hidden_states=False,
        training=False,
    ):
        """(last hidden state, all hidden states or None, attention maps or None)."""
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            hidden_states, probs = layer(
                hidden_states,
                attention_bias=attention_bias,
                output_attentions=output_attentions,
                training=training,
            )
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


# ---------------------------------------------------------------------------------------------
# Text and vision transformers


def text_attention_bias(seq_len, attention_mask, dtype):
    """Causal mask plus padding mask, as an additive [batch or 1, 1, seq, seq] bias.

    Masked scores get the dtype's most negative value, like transformers' PyTorch model (a key
    masked both ways gets -inf, a row whose every visible key is padding attends uniformly to them).
    """
    most_negative = tf.constant(tf.as_dtype(dtype).min, dtype)
    visible = tf.linalg.band_part(tf.ones((seq_len, seq_len), tf.bool), -1, 0)
    bias = tf.where(visible, tf.zeros((), dtype), most_negative)[None, None]
    if attention_mask is not None:
        padding = (1.0 - tf.cast(attention_mask, dtype))[:, None, None, :] * most_negative
        bias = bias + padding
    return bias


def first_index_where(condition):
    """Index of the first True per row ([batch, seq] -> [batch]); 0 for a row with none (as torch's argmax)."""
    seq_len = tf.shape(condition)[-1]
    positions = tf.range(seq_len)[None, :]
    first = tf.reduce_min(tf.where(condition, positions, seq_len), axis=-1)
    return tf.where(first == seq_len, 0, first)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPTextTransformer(_ConfiguredLayer):
    config_class = CLIPTextConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.embeddings = CLIPTextEmbeddings(self.config, **self._child_kwargs("embeddings"))
        self.encoder = CLIPEncoder(self.config, **self._child_kwargs("encoder"))
        self.final_layer_norm = _layer_norm(self, "final_layer_norm")

    def build(self, input_shape=None):
        self.embeddings.build(None)
        self.encoder.build(None)
        self.final_layer_norm.build((None, None, self.config.hidden_size))

    def call(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        output_attentions=False,
        output_hidden_states=False,
        training=False,
    ):
        hidden_states = self.embeddings(input_ids, position_ids=position_ids)
        bias = text_attention_bias(tf.shape(input_ids)[-1], attention_mask, self.compute_dtype)
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            attention_bias=bias,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        last = apply_layer_norm(self.final_layer_norm, last)
        pooled = tf.gather(last, self.pooling_positions(input_ids), batch_dims=1)
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden, attentions=attentions
        )

    def pooling_positions(self, input_ids):
        """Where each text is pooled: its first eos token, or argmax(input_ids) for legacy configs."""
        if self.config.uses_legacy_eos_pooling:
            # OpenAI's rule: the end-of-text token has the largest id.
            is_target = input_ids == tf.reduce_max(input_ids, axis=-1, keepdims=True)
        else:
            is_target = input_ids == tf.cast(self.config.eos_token_id, input_ids.dtype)
        return first_index_where(is_target)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPVisionTransformer(_ConfiguredLayer):
    config_class = CLIPVisionConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.embeddings = CLIPVisionEmbeddings(self.config, **self._child_kwargs("embeddings"))
        self.pre_layrnorm = _layer_norm(self, "pre_layrnorm")  # sic: the canonical name
        self.encoder = CLIPEncoder(self.config, **self._child_kwargs("encoder"))
        self.post_layernorm = _layer_norm(self, "post_layernorm")

    def build(self, input_shape=None):
        shape = (None, None, self.config.hidden_size)
        self.embeddings.build(None)
        self.pre_layrnorm.build(shape)
        self.encoder.build(None)
        self.post_layernorm.build(shape)

    def call(
        self,
        pixel_values,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        training=False,
    ):
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = apply_layer_norm(self.pre_layrnorm, hidden_states)
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        pooled = apply_layer_norm(self.post_layernorm, last[:, 0, :])
        return BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden, attentions=attentions
        )


# ---------------------------------------------------------------------------------------------
# Input checks (clip_core.validation) on what TensorFlow knows before running


def _to_tensor(x):
    return None if x is None else tf.convert_to_tensor(x)


def _static_shape(x):
    return None if x is None else tuple(x.shape.as_list())


def _check_text_inputs(config, input_ids, attention_mask, position_ids):
    validation.require_inputs(input_ids=input_ids)
    shape = _static_shape(input_ids)
    id_range = None
    if tf.executing_eagerly():  # value checks need concrete ids: skipped while tracing
        ids = input_ids.numpy()
        if ids.size:
            id_range = (int(ids.min()), int(ids.max()))
    validation.check_input_ids(shape, config, id_range)
    validation.check_attention_mask(_static_shape(attention_mask), shape)
    validation.check_position_ids(_static_shape(position_ids), shape)


def _check_pixel_values(config, pixel_values, interpolate_pos_encoding):
    validation.require_inputs(pixel_values=pixel_values)
    shape = _static_shape(pixel_values)
    if len(shape) == 4:
        # Dimensions unknown while tracing cannot be judged: let them pass as the expected ones.
        expected = (0, config.num_channels, config.image_size, config.image_size)
        shape = tuple(e if s is None else s for s, e in zip(shape, expected))
    validation.check_pixel_values(shape, config, interpolate_pos_encoding)


def contrastive_loss(logits):
    """Mean cross-entropy of each row against the diagonal."""
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def clip_loss(logits_per_text):
    """Symmetric CLIP loss: the mean of the text->image and image->text cross-entropies."""
    logits = tf.cast(logits_per_text, tf.float32)
    return (contrastive_loss(logits) + contrastive_loss(tf.transpose(logits))) / 2.0


def _l2_normalize(x):
    return x / tf.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Public classes

# Canonical names start with one of these; the Keras path before it (the model's name, any
# wrapping layers) is dropped.
_CANONICAL_ROOTS = ("text_model", "vision_model", "text_projection", "visual_projection", "logit_scale")
# Keras variable names -> canonical leaf names (Dense/Conv kernel, LayerNorm gamma/beta, Embedding).
_LEAF_NAMES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}


def canonical_name(variable_path: str) -> str:
    """Keras variable path -> canonical name, e.g. ``x/text_model/.../q_proj/kernel`` -> ``text_model....q_proj.weight``."""
    parts = variable_path.split("/")
    starts = [i for i, part in enumerate(parts) if part in _CANONICAL_ROOTS]
    if not starts:
        raise ValueError(f"variable {variable_path!r} does not belong to a CLIP module")
    parts = parts[starts[-1] :]
    parts[-1] = _LEAF_NAMES.get(parts[-1], parts[-1])
    return ".".join(parts)


class _CLIPPreTrainedModel(keras.Model):
    """from_pretrained / save_pretrained through canonical numpy state, and Keras (de)serialisation."""

    config_class = CLIPConfig
    model_kind = "clip"

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = _as_config(config, self.config_class)

    def _child_kwargs(self, name: str) -> dict:
        return {"name": name, "dtype": self.dtype_policy}

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

    def load_canonical_state(self, state) -> None:
        """Assign canonical numpy arrays (all of them, checked by name and shape) to the variables."""
        variables = self.canonical_variables()
        missing = sorted(set(variables) - set(state))
        unexpected = sorted(set(state) - set(variables))
        if missing or unexpected:
            raise ValueError(
                f"state does not fit the model: missing {missing[:10]}, unexpected {unexpected[:10]}"
            )
        for name, var in variables.items():
            array = to_channels_last(name, np.asarray(state[name]))
            if tuple(array.shape) != tuple(var.shape):
                raise ValueError(f"{name}: got shape {array.shape}, the model has {tuple(var.shape)}")
            var.assign(array.astype(var.dtype))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, config=None, dtype=None, **kwargs):
        """A model with the weights of a checkpoint folder (config.json + model.safetensors, ...)."""
        config, state = load_pretrained(pretrained_model_name_or_path, cls.model_kind, config)
        if dtype is not None:
            kwargs["dtype"] = dtype
        model = cls(config, **kwargs)
        model.load_canonical_state(state)
        return model

    def save_pretrained(self, save_directory, formats=("safetensors",)) -> list[str]:
        """Write config.json and model.safetensors (canonical names); formats may add "h5" (tf_model.h5)."""
        formats = (formats,) if isinstance(formats, str) else tuple(formats)
        return save_pretrained(
            save_directory, self.config, self.canonical_state(), formats=formats, model_kind=self.model_kind
        )


def _finish(output, return_dict):
    return output if return_dict is None or return_dict else output.to_tuple()


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPTextModel(_CLIPPreTrainedModel):
    config_class = CLIPTextConfig
    model_kind = "text"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(self.config, **self._child_kwargs("text_model"))
        self.build(None)

    def build(self, input_shape=None):
        self.text_model.build(None)

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
    ):
        input_ids, attention_mask, position_ids = map(_to_tensor, (input_ids, attention_mask, position_ids))
        _check_text_inputs(self.config, input_ids, attention_mask, position_ids)
        output = self.text_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            training=training,
        )
        return _finish(output, return_dict)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPTextModelWithProjection(_CLIPPreTrainedModel):
    """Text tower + text_projection (no normalisation): text_embeds as CLIPModel projects them."""

    config_class = CLIPTextConfig
    model_kind = "text_with_projection"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.text_model = CLIPTextTransformer(cfg, **self._child_kwargs("text_model"))
        self.text_projection = _dense(
            self, cfg.projection_dim, "text_projection", cfg.hidden_size**-0.5 * cfg.initializer_factor, False
        )
        self.build(None)

    def build(self, input_shape=None):
        self.text_model.build(None)
        self.text_projection.build((None, self.config.hidden_size))

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
    ):
        input_ids, attention_mask, position_ids = map(_to_tensor, (input_ids, attention_mask, position_ids))
        _check_text_inputs(self.config, input_ids, attention_mask, position_ids)
        text = self.text_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            training=training,
        )
        output = CLIPTextModelOutput(
            text_embeds=apply_dense(self.text_projection, text.pooler_output),
            last_hidden_state=text.last_hidden_state,
            hidden_states=text.hidden_states,
            attentions=text.attentions,
        )
        return _finish(output, return_dict)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPVisionModel(_CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    model_kind = "vision"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.vision_model = CLIPVisionTransformer(self.config, **self._child_kwargs("vision_model"))
        self.build(None)

    def build(self, input_shape=None):
        self.vision_model.build(None)

    def call(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        pixel_values = _to_tensor(pixel_values)
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        output = self.vision_model(
            pixel_values,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        )
        return _finish(output, return_dict)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPVisionModelWithProjection(_CLIPPreTrainedModel):
    """Vision tower + visual_projection (no normalisation)."""

    config_class = CLIPVisionConfig
    model_kind = "vision_with_projection"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.vision_model = CLIPVisionTransformer(cfg, **self._child_kwargs("vision_model"))
        self.visual_projection = _dense(
            self,
            cfg.projection_dim,
            "visual_projection",
            cfg.hidden_size**-0.5 * cfg.initializer_factor,
            False,
        )
        self.build(None)

    def build(self, input_shape=None):
        self.vision_model.build(None)
        self.visual_projection.build((None, self.config.hidden_size))

    def call(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        pixel_values = _to_tensor(pixel_values)
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(
            pixel_values,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        )
        output = CLIPVisionModelOutput(
            image_embeds=apply_dense(self.visual_projection, vision.pooler_output),
            last_hidden_state=vision.last_hidden_state,
            hidden_states=vision.hidden_states,
            attentions=vision.attentions,
        )
        return _finish(output, return_dict)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPModel(_CLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature; ``fit`` trains with the CLIP loss.

    ``model.compile(optimizer=...); model.fit(dataset)`` works on a dataset of dicts with input_ids,
    pixel_values and optionally attention_mask / position_ids: ``train_step`` asks the model for its
    own contrastive loss (no Keras loss function is needed).
    """

    config_class = CLIPConfig
    model_kind = "clip"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        factor = cfg.initializer_factor
        text_cfg, vision_cfg = cfg.text_config, cfg.vision_config
        self.text_model = CLIPTextTransformer(text_cfg, **self._child_kwargs("text_model"))
        self.vision_model = CLIPVisionTransformer(vision_cfg, **self._child_kwargs("vision_model"))
        self.visual_projection = _dense(
            self, cfg.projection_dim, "visual_projection", vision_cfg.hidden_size**-0.5 * factor, False
        )
        self.text_projection = _dense(
            self, cfg.projection_dim, "text_projection", text_cfg.hidden_size**-0.5 * factor, False
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.build(None)

    def build(self, input_shape=None):
        cfg = self.config
        self.text_model.build(None)
        self.vision_model.build(None)
        self.visual_projection.build((None, cfg.vision_config.hidden_size))
        self.text_projection.build((None, cfg.text_config.hidden_size))
        self.logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(cfg.logit_scale_init_value), name="logit_scale"
        )

    # -- features --------------------------------------------------------------------------

    def get_text_features(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
    ):
        """Projected (not normalised) text embeddings [batch, projection_dim]."""
        input_ids, attention_mask, position_ids = map(_to_tensor, (input_ids, attention_mask, position_ids))
        _check_text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        text = self.text_model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, training=training
        )
        return apply_dense(self.text_projection, text.pooler_output)

    def get_image_features(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        """Projected (not normalised) image embeddings [batch, projection_dim]."""
        pixel_values = _to_tensor(pixel_values)
        _check_pixel_values(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding), training=training
        )
        return apply_dense(self.visual_projection, vision.pooler_output)

    # -- forward ---------------------------------------------------------------------------

    def call(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        return_loss=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        input_ids, pixel_values, attention_mask, position_ids = map(
            _to_tensor, (input_ids, pixel_values, attention_mask, position_ids)
        )
        validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
        _check_text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        _check_pixel_values(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        num_texts, num_images = input_ids.shape[0], pixel_values.shape[0]
        if return_loss and num_texts is not None and num_images is not None:
            validation.check_loss_batches(num_texts, num_images)

        flags = {
            "output_attentions": bool(output_attentions),
            "output_hidden_states": bool(output_hidden_states),
            "training": training,
        }
        vision = self.vision_model(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding), **flags
        )
        text = self.text_model(input_ids, attention_mask=attention_mask, position_ids=position_ids, **flags)

        image_embeds = _l2_normalize(apply_dense(self.visual_projection, vision.pooler_output))
        text_embeds = _l2_normalize(apply_dense(self.text_projection, text.pooler_output))
        scale = tf.exp(tf.cast(self.logit_scale, text_embeds.dtype))
        logits_per_text = tf.matmul(text_embeds, image_embeds, transpose_b=True) * scale
        logits_per_image = tf.transpose(logits_per_text)

        output = CLIPOutput(
            loss=clip_loss(logits_per_text) if return_loss else None,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text,
            vision_model_output=vision,
        )
        return _finish(output, return_dict)

    # -- Keras fit / evaluate with the contrastive loss --------------------------------------

    @staticmethod
    def _model_inputs(data) -> dict:
        inputs = data[0] if isinstance(data, (tuple, list)) else data
        if not isinstance(inputs, dict):
            raise ValueError(
                "TFCLIPModel.fit expects batches that are dicts with input_ids and pixel_values "
                f"(and optionally attention_mask, position_ids), got {type(inputs).__name__}"
            )
        return inputs

    def train_step(self, data):
        inputs = self._model_inputs(data)
        with tf.GradientTape() as tape:
            loss = self(**inputs, return_loss=True, training=True).loss
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        loss = self(**self._model_inputs(data), return_loss=True, training=False).loss
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


__all__ = [
    "TFCLIPModel",
    "TFCLIPTextModel",
    "TFCLIPTextModelWithProjection",
    "TFCLIPVisionModel",
    "TFCLIPVisionModelWithProjection",
    "canonical_name",
    "clip_loss",
]
