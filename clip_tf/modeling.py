"""CLIP on TensorFlow with Keras 3: TFCLIPModel, TFCLIPTextModel(WithProjection), TFCLIPVisionModel(WithProjection).

Block for block the mirror of clip_torch/modeling.py (the architecture is explained there), in
Keras 3 layers on TensorFlow. Each layer is named after its canonical module, so a variable's Keras
path spells the canonical name: ``tfclip_model/text_model/encoder/layers.0/self_attn/q_proj/kernel``
is ``text_model.encoder.layers.0.self_attn.q_proj.weight`` (``canonical_name``). Loading, init and
input handling are in clip_tf/pretrained.py and clip_core.

TF specifics: Dense and LayerNorm layers hold the variables but are evaluated by ``apply_dense`` /
``apply_layer_norm`` (fewer ops inside tf.function); Keras wants non-tensor arguments by keyword;
layers serialise through ``get_config`` (the clip_core config's dict). We import ``keras`` (Keras 3),
never ``tf.keras``: once transformers' TF models are imported, TF_USE_LEGACY_KERAS=1 makes
``tf.keras`` the legacy tf-keras package.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from clip_core.config import CLIPTextConfig, CLIPVisionConfig
from clip_core.interpolation import position_resize_matrix
from clip_core.modeling_utils import (
    activation,
    activations,
    as_config,
    as_requested,
    clip_inputs,
    clip_output,
    output_flags,
    run_layers,
    text_output,
    vision_output,
)
from clip_core.outputs import BaseModelOutputWithPooling
from clip_tf.pretrained import SERIALIZATION_PACKAGE, TFCLIPPreTrainedModel, canonical_name

ACTIVATIONS = activations(
    sigmoid=tf.sigmoid,
    tanh=tf.tanh,
    gelu_erf=lambda x: tf.nn.gelu(x, approximate=False),
    gelu_tanh=lambda x: tf.nn.gelu(x, approximate=True),
    relu=tf.nn.relu,
)

# ---------------------------------------------------------------------------------------------
# Layers built from a clip_core config (get_config / from_config), and how they are evaluated

# Initial values come from clip_core's init rules (init_weights); layers start at zero.
_ZEROS = "zeros"


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class _ConfiguredLayer(keras.layers.Layer):
    """A layer built from a clip_core config; serialises as that config's dict."""

    # The blocks shared by both towers take either tower's config.
    config_class: type | tuple[type, ...] = (CLIPTextConfig, CLIPVisionConfig)

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config, self.config_class)

    def _child_kwargs(self, name: str) -> dict:
        # Keras 3 sublayers do not inherit their parent's dtype policy: pass it on.
        return {"name": name, "dtype": self.dtype_policy}

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


def _dense(layer, units: int, name: str, use_bias: bool = True):
    return keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer=_ZEROS, **layer._child_kwargs(name)
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


def _embedding(layer, count: int, width: int, name: str):
    return keras.layers.Embedding(count, width, embeddings_initializer=_ZEROS, **layer._child_kwargs(name))


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPTextEmbeddings(_ConfiguredLayer):
    config_class = CLIPTextConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.token_embedding = _embedding(self, cfg.vocab_size, cfg.hidden_size, "token_embedding")
        self.position_embedding = _embedding(
            self, cfg.max_position_embeddings, cfg.hidden_size, "position_embedding"
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
    """Channels-first pixels, transposed once for TF's channels-last Conv2D (faster on CPU)."""

    config_class = CLIPVisionConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.patch_embedding = keras.layers.Conv2D(
            cfg.hidden_size,
            kernel_size=cfg.patch_size,
            strides=cfg.patch_size,
            padding="valid",
            data_format="channels_last",
            use_bias=False,
            kernel_initializer=_ZEROS,
            **self._child_kwargs("patch_embedding"),
        )
        self.position_embedding = _embedding(self, cfg.num_patches + 1, cfg.hidden_size, "position_embedding")

    def build(self, input_shape=None):
        cfg = self.config
        self.class_embedding = self.add_weight(
            shape=(cfg.hidden_size,), initializer=_ZEROS, name="class_embedding"
        )
        self.patch_embedding.build((None, None, None, cfg.num_channels))
        self.position_embedding.build(None)

    def call(self, pixel_values, interpolate_pos_encoding=False):
        # Channels-first in (like transformers); TF's CPU convolutions want channels-last.
        pixels = tf.transpose(tf.cast(pixel_values, self.compute_dtype), (0, 2, 3, 1))
        patches = self.patch_embedding(pixels)  # (B, grid_h, grid_w, C)
        grid_h, grid_w = patches.shape[1], patches.shape[2]
        batch, width = tf.shape(patches)[0], self.config.hidden_size
        patches = tf.reshape(patches, (batch, -1, width))  # (B, grid_h * grid_w, C)
        class_token = tf.broadcast_to(tf.cast(self.class_embedding, self.compute_dtype), (batch, 1, width))
        positions = tf.cast(self.position_embedding.embeddings, self.compute_dtype)
        if interpolate_pos_encoding:  # static height and width (checked with the inputs)
            matrix = position_resize_matrix(self.config.num_patches, grid_h, grid_w)
            positions = tf.matmul(tf.constant(matrix, positions.dtype), positions)
        return tf.concat([class_token, patches], axis=1) + positions[None]


# ---------------------------------------------------------------------------------------------
# Attention, MLP, encoder layer, encoder


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPAttention(_ConfiguredLayer):
    """Self-attention with (B, heads, T, head_dim) batched matmuls; the Dense layers run as apply_dense."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        width = self.config.hidden_size
        self.k_proj = _dense(self, width, "k_proj")
        self.v_proj = _dense(self, width, "v_proj")
        self.q_proj = _dense(self, width, "q_proj")
        self.out_proj = _dense(self, width, "out_proj")
        self.dropout = keras.layers.Dropout(self.config.attention_dropout, **self._child_kwargs("dropout"))

    def build(self, input_shape=None):
        for proj in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            proj.build((None, None, self.config.hidden_size))

    def _heads(self, x, batch):  # (B, T, C) -> (B, heads, T, head_dim): one reshape, one transpose
        cfg = self.config
        return tf.transpose(tf.reshape(x, (batch, -1, cfg.num_attention_heads, cfg.head_dim)), (0, 2, 1, 3))

    def call(self, hidden_states, attention_bias=None, output_attentions=False, training=False):
        batch = tf.shape(hidden_states)[0]
        query = self._heads(apply_dense(self.q_proj, hidden_states) * self.config.head_dim**-0.5, batch)
        key = self._heads(apply_dense(self.k_proj, hidden_states), batch)
        value = self._heads(apply_dense(self.v_proj, hidden_states), batch)
        scores = tf.matmul(query, key, transpose_b=True)  # (B, heads, T, T)
        if attention_bias is not None:
            scores = scores + attention_bias
        probs = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), scores.dtype)
        dropped = (
            self.dropout(probs, training=training) if training and self.config.attention_dropout else probs
        )
        context = tf.transpose(tf.matmul(dropped, value), (0, 2, 1, 3))
        context = tf.reshape(context, (batch, -1, self.config.hidden_size))
        return apply_dense(self.out_proj, context), (probs if output_attentions else None)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPMLP(_ConfiguredLayer):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.activation = activation(ACTIVATIONS, self.config.hidden_act)
        self.fc1 = _dense(self, self.config.intermediate_size, "fc1")
        self.fc2 = _dense(self, self.config.hidden_size, "fc2")

    def build(self, input_shape=None):
        self.fc1.build((None, None, self.config.hidden_size))
        self.fc2.build((None, None, self.config.intermediate_size))

    def call(self, hidden_states):
        return apply_dense(self.fc2, self.activation(apply_dense(self.fc1, hidden_states)))


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CLIPEncoderLayer(_ConfiguredLayer):
    """The pre-norm block, its LayerNorms evaluated by apply_layer_norm."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.self_attn = CLIPAttention(self.config, **self._child_kwargs("self_attn"))
        self.layer_norm1 = _layer_norm(self, "layer_norm1")
        self.mlp = CLIPMLP(self.config, **self._child_kwargs("mlp"))
        self.layer_norm2 = _layer_norm(self, "layer_norm2")

    def build(self, input_shape=None):
        for part in (self.self_attn, self.layer_norm1, self.mlp, self.layer_norm2):
            part.build((None, None, self.config.hidden_size))

    def call(self, hidden_states, attention_bias=None, output_attentions=False, training=False):
        normed = apply_layer_norm(self.layer_norm1, hidden_states)
        attended, probs = self.self_attn(
            normed, attention_bias=attention_bias, output_attentions=output_attentions, training=training
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
        """Keras needs non-tensor arguments by keyword: the layer loop passes them so."""

        def call(layer, x):
            return layer(
                x, attention_bias=attention_bias, output_attentions=output_attentions, training=training
            )

        return run_layers(self.layers, hidden_states, call, output_attentions, output_hidden_states)


# ---------------------------------------------------------------------------------------------
# Text and vision transformers


def text_attention_bias(seq_len, attention_mask, dtype):
    """clip_torch.modeling.text_attention_bias in TF ops (band_part for the causal part)."""
    most_negative = tf.constant(tf.as_dtype(dtype).min, dtype)
    visible = tf.linalg.band_part(tf.ones((seq_len, seq_len), tf.bool), -1, 0)
    bias = tf.where(visible, tf.zeros((), dtype), most_negative)[None, None]
    if attention_mask is not None:
        bias = (
            bias + tf.expand_dims(tf.expand_dims(1.0 - tf.cast(attention_mask, dtype), 1), 1) * most_negative
        )
    return bias


def first_index_where(condition):
    """Index of the first True per row ((B, T) -> (B,)); 0 for a row with none (as torch's argmax)."""
    seq_len = tf.shape(condition)[-1]
    first = tf.reduce_min(tf.where(condition, tf.range(seq_len)[None, :], seq_len), axis=-1)
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
        return BaseModelOutputWithPooling(last, pooled, all_hidden, attentions)

    def pooling_positions(self, input_ids):
        """First eos (or, for legacy configs, the largest id) per row, as int32 for tf.gather."""
        if self.config.uses_legacy_eos_pooling:
            return first_index_where(input_ids == tf.reduce_max(input_ids, axis=-1, keepdims=True))
        return first_index_where(input_ids == tf.cast(self.config.eos_token_id, input_ids.dtype))


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
        self.embeddings.build(None)
        self.pre_layrnorm.build((None, None, self.config.hidden_size))
        self.encoder.build(None)
        self.post_layernorm.build((None, None, self.config.hidden_size))

    def call(
        self,
        pixel_values,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        training=False,
    ):
        hidden_states = apply_layer_norm(
            self.pre_layrnorm,
            self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding),
        )
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        pooled = apply_layer_norm(self.post_layernorm, last[:, 0, :])
        return BaseModelOutputWithPooling(last, pooled, all_hidden, attentions)


# ---------------------------------------------------------------------------------------------
# Loss


def contrastive_loss(logits):
    """Row-wise sparse softmax cross-entropy against the diagonal, averaged."""
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def clip_loss(logits_per_text):
    """The symmetric loss over logits cast to float32 (a bf16 policy keeps a float32 loss)."""
    logits = tf.cast(logits_per_text, tf.float32)
    return (contrastive_loss(logits) + contrastive_loss(tf.transpose(logits))) / 2.0


def l2_normalize(x):
    return x / tf.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Public classes


class _TextTower(TFCLIPPreTrainedModel):
    """TFCLIPTextModel and, with ``with_projection``, TFCLIPTextModelWithProjection."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(self.config, **self._child_kwargs("text_model"))
        if self.with_projection:
            self.text_projection = _dense(self, self.config.projection_dim, "text_projection", use_bias=False)
        self._built()

    def build(self, input_shape=None):
        self.text_model.build(None)
        if self.with_projection:
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
        inputs = self._text_inputs(self.config, input_ids, attention_mask, position_ids)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        output = self.text_model(*inputs, **flags, training=training)
        if self.with_projection:
            output = text_output(output, apply_dense(self.text_projection, output.pooler_output))
        return as_requested(output, self.config, return_dict)


class _VisionTower(TFCLIPPreTrainedModel):
    """TFCLIPVisionModel and, with ``with_projection``, TFCLIPVisionModelWithProjection."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.vision_model = CLIPVisionTransformer(self.config, **self._child_kwargs("vision_model"))
        if self.with_projection:
            self.visual_projection = _dense(
                self, self.config.projection_dim, "visual_projection", use_bias=False
            )
        self._built()

    def build(self, input_shape=None):
        self.vision_model.build(None)
        if self.with_projection:
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
        pixels = self._pixel_inputs(self.config, pixel_values, interpolate_pos_encoding)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        output = self.vision_model(
            pixels, **flags, interpolate_pos_encoding=bool(interpolate_pos_encoding), training=training
        )
        if self.with_projection:
            output = vision_output(output, apply_dense(self.visual_projection, output.pooler_output))
        return as_requested(output, self.config, return_dict)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPTextModel(_TextTower):
    """The text tower as a Keras model: last_hidden_state and pooler_output.

    Args:
        config: the text tower's config (a CLIPTextConfig, a dict, or transformers' own).
        dtype: a Keras dtype policy or its name ("float32", "bfloat16", "mixed_bfloat16").

    Example:
        >>> model = TFCLIPTextModel.from_pretrained("path/to/clip")
        >>> out = model(**tokenizer(["a photo of a cat"], return_tensors="tf", padding=True))
        >>> out.pooler_output.shape  # (1, hidden_size)
    """

    model_kind = "text"


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPTextModelWithProjection(_TextTower):
    """The text tower and its projection as a Keras model: ``text_embeds`` (not normalised).

    Example:
        >>> model = TFCLIPTextModelWithProjection.from_pretrained("path/to/clip")
        >>> embeds = model(**tokenizer(texts, return_tensors="tf", padding=True)).text_embeds
    """

    model_kind = "text_with_projection"


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPVisionModel(_VisionTower):
    """The vision tower as a Keras model: last_hidden_state and pooler_output (class token).

    Example:
        >>> model = TFCLIPVisionModel.from_pretrained("path/to/clip")
        >>> out = model(pixel_values=processor(images=images, return_tensors="tf")["pixel_values"])
    """

    model_kind = "vision"


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPVisionModelWithProjection(_VisionTower):
    """The vision tower and its projection as a Keras model: ``image_embeds`` (not normalised).

    Example:
        >>> model = TFCLIPVisionModelWithProjection.from_pretrained("path/to/clip")
        >>> embeds = model(pixel_values=pixels).image_embeds  # pixels channels-first, as transformers
    """

    model_kind = "vision_with_projection"


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TFCLIPModel(TFCLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature, as a Keras model.

    ``model.compile(optimizer=...); model.fit(dataset)`` works on a dataset of dicts with input_ids,
    pixel_values and optionally attention_mask / position_ids: ``train_step`` asks the model for its
    own contrastive loss (no Keras loss function is needed).

    Args:
        config: the model's CLIPConfig (or its to_dict(), or transformers' CLIPConfig).
        dtype: a Keras dtype policy or its name ("float32", "bfloat16", "mixed_bfloat16").

    Example:
        >>> model = TFCLIPModel.from_pretrained("path/to/clip")
        >>> out = model(**processor(text=texts, images=images, return_tensors="tf", padding=True))
        >>> probs = tf.nn.softmax(out.logits_per_image, axis=-1)
        >>> fast = tf.function(model.get_image_features, jit_compile=True)  # XLA
    """

    model_kind = "clip"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.text_model = CLIPTextTransformer(cfg.text_config, **self._child_kwargs("text_model"))
        self.vision_model = CLIPVisionTransformer(cfg.vision_config, **self._child_kwargs("vision_model"))
        self.visual_projection = _dense(self, cfg.projection_dim, "visual_projection", use_bias=False)
        self.text_projection = _dense(self, cfg.projection_dim, "text_projection", use_bias=False)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._built()

    def build(self, input_shape=None):
        cfg = self.config
        self.text_model.build(None)
        self.vision_model.build(None)
        self.visual_projection.build((None, cfg.vision_config.hidden_size))
        self.text_projection.build((None, cfg.text_config.hidden_size))
        self.logit_scale = self.add_weight(shape=(), initializer=_ZEROS, name="logit_scale")

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
        """``text_projection`` of the pooled text state: a (B, projection_dim) tf.Tensor."""
        inputs = self._text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        return apply_dense(self.text_projection, self.text_model(*inputs, training=training).pooler_output)

    def get_image_features(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        """``visual_projection`` of the pooled image state: a (B, projection_dim) tf.Tensor."""
        pixels = self._pixel_inputs(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(
            pixels, interpolate_pos_encoding=bool(interpolate_pos_encoding), training=training
        )
        return apply_dense(self.visual_projection, vision.pooler_output)

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
        inputs, pixels = clip_inputs(
            self, input_ids, pixel_values, attention_mask, position_ids, interpolate_pos_encoding, return_loss
        )
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        vision = self.vision_model(
            pixels, **flags, interpolate_pos_encoding=bool(interpolate_pos_encoding), training=training
        )
        text = self.text_model(*inputs, **flags, training=training)
        image_embeds = l2_normalize(apply_dense(self.visual_projection, vision.pooler_output))
        text_embeds = l2_normalize(apply_dense(self.text_projection, text.pooler_output))
        scale = tf.exp(tf.cast(self.logit_scale, text_embeds.dtype))
        logits_per_text = tf.matmul(text_embeds, image_embeds, transpose_b=True) * scale
        loss = clip_loss(logits_per_text) if return_loss else None
        output = clip_output(text, vision, text_embeds, image_embeds, logits_per_text, tf.transpose, loss)
        return as_requested(output, self.config, return_dict)

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
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(
            self(**self._model_inputs(data), return_loss=True, training=False).loss
        )
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


__all__ = [
    "TFCLIPModel",
    "TFCLIPPreTrainedModel",
    "TFCLIPTextModel",
    "TFCLIPTextModelWithProjection",
    "TFCLIPVisionModel",
    "TFCLIPVisionModelWithProjection",
    "canonical_name",
    "clip_loss",
    "contrastive_loss",
]
