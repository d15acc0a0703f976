"""CLIP on Flax Linen: FlaxCLIPModel, FlaxCLIPTextModel(WithProjection), FlaxCLIPVisionModel(WithProjection).

Block for block the mirror of clip_torch/modeling.py (the architecture is explained there), in
Flax Linen. Each submodule is named after its canonical module, so the params tree is exactly
``clip_core.layouts.to_flax_params`` of the canonical state (and transformers' flax_model.msgpack):
``text_model/encoder/layers/0/self_attn/q_proj/kernel``. Loading, init and running a module with
its params are in clip_flax/pretrained.py and clip_core.

Two layers of API, as in transformers: Linen modules (``FlaxCLIPModule`` ...) for users who manage
params themselves (``module.apply({"params": params}, ...)``, transformers' argument order and
channels-last pixels), and thin wrappers (``FlaxCLIPModel`` ...) that hold ``params``, take
channels-first pixels and load/save checkpoints. Everything is
jit-compatible: shapes are checked in Python (they are static under tracing), id values only when
the ids are concrete.

``dtype`` is the compute dtype (e.g. bfloat16), ``param_dtype`` the dtype the params are kept in;
the final L2 normalisation, the logits and the loss run in float32 whatever ``dtype`` is.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clip_core import outputs, validation
from clip_core.interpolation import position_resize_matrix
from clip_core.modeling_utils import (
    activation,
    activations,
    as_requested,
    clip_inputs,
    clip_output,
    output_flags,
    run_layers,
    text_output,
    vision_output,
)
from clip_flax.pretrained import FlaxCLIPPreTrainedModel, ids_array, module_pixels

# The output containers as pytrees, so that jax.jit (and grad, vmap...) can return them.
for _output in (
    outputs.BaseModelOutput,
    outputs.BaseModelOutputWithPooling,
    outputs.CLIPTextModelOutput,
    outputs.CLIPVisionModelOutput,
    outputs.CLIPOutput,
):
    with contextlib.suppress(ValueError):  # already registered (the module reloaded)
        jax.tree_util.register_dataclass(_output, [f.name for f in dataclasses.fields(_output)], [])

ACTIVATIONS = activations(
    sigmoid=jax.nn.sigmoid,
    tanh=jnp.tanh,
    gelu_erf=lambda x: jax.nn.gelu(x, approximate=False),
    gelu_tanh=lambda x: jax.nn.gelu(x, approximate=True),
    relu=jax.nn.relu,
)

# Layer helpers. Linen's own initialisers give ``module.init`` a usable random model; the
# wrappers' init_weights draws every parameter by clip_core's rules (as transformers' PyTorch).


def _normal(module: nn.Module):
    config = getattr(module.config, "text_config", module.config)  # a CLIPConfig has no initializer_range
    return nn.initializers.normal(stddev=config.initializer_range)


def _dense(module: nn.Module, units: int, use_bias: bool = True) -> nn.Dense:
    kwargs = dict(dtype=module.dtype, param_dtype=module.param_dtype)
    return nn.Dense(units, use_bias=use_bias, kernel_init=_normal(module), **kwargs)


def _layer_norm(module: nn.Module) -> nn.LayerNorm:
    kwargs = dict(dtype=module.dtype, param_dtype=module.param_dtype)
    return nn.LayerNorm(epsilon=module.config.layer_norm_eps, **kwargs)


def _embed(module: nn.Module, count: int) -> nn.Embed:
    kwargs = dict(dtype=module.dtype, param_dtype=module.param_dtype)
    return nn.Embed(count, module.config.hidden_size, embedding_init=_normal(module), **kwargs)


class _Block(nn.Module):
    """A building block: a tower's config, the compute and param dtypes."""

    config: Any
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _kwargs(self) -> dict:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)


# Embeddings


class CLIPTextEmbeddings(_Block):
    def setup(self):
        self.token_embedding = _embed(self, self.config.vocab_size)
        self.position_embedding = _embed(self, self.config.max_position_embeddings)

    def __call__(self, input_ids, position_ids=None):
        if position_ids is None:
            position_ids = jnp.arange(input_ids.shape[-1])[None, :]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPVisionEmbeddings(_Block):
    """Channels-last pixels (B, H, W, C), as transformers' Flax modules and XLA's convolution want."""

    def setup(self):
        cfg, patch = self.config, (self.config.patch_size,) * 2
        self.class_embedding = self.param(
            "class_embedding", _normal(self), (cfg.hidden_size,), self.param_dtype
        )
        conv = dict(
            kernel_size=patch, strides=patch, padding="VALID", use_bias=False, kernel_init=_normal(self)
        )
        self.patch_embedding = nn.Conv(cfg.hidden_size, **conv, **self._kwargs())
        self.position_embedding = _embed(self, cfg.num_patches + 1)

    def __call__(self, pixel_values, interpolate_pos_encoding=False):
        patches = self.patch_embedding(pixel_values.astype(self.dtype))  # (B, grid_h, grid_w, C)
        batch, grid_h, grid_w, width = patches.shape
        patches = patches.reshape(batch, grid_h * grid_w, width)
        class_token = jnp.broadcast_to(self.class_embedding.astype(self.dtype), (batch, 1, width))
        positions = self.position_embedding(jnp.arange(self.config.num_patches + 1))
        if interpolate_pos_encoding:  # static grid size under jit: the matrix is a constant
            matrix = jnp.asarray(
                position_resize_matrix(self.config.num_patches, grid_h, grid_w), positions.dtype
            )
            positions = jnp.matmul(matrix, positions, precision=jax.lax.Precision.HIGHEST)
        return jnp.concatenate([class_token, patches], axis=1) + positions[None]


# Attention, MLP, encoder layer, encoder


class CLIPAttention(_Block):
    """Self-attention as two einsums over (B, T, heads, head_dim); dropout from the "dropout" rng."""

    def setup(self):
        width = self.config.hidden_size
        self.k_proj = _dense(self, width)
        self.v_proj = _dense(self, width)
        self.q_proj = _dense(self, width)
        self.out_proj = _dense(self, width)
        self.dropout = nn.Dropout(rate=self.config.attention_dropout)

    def _heads(self, x):  # (B, T, C) -> (B, T, heads, head_dim)
        return x.reshape(*x.shape[:2], self.config.num_attention_heads, self.config.head_dim)

    def __call__(self, hidden_states, attention_bias=None, deterministic=True, output_attentions=False):
        query = self._heads(self.q_proj(hidden_states) * jnp.asarray(self.config.head_dim**-0.5, self.dtype))
        key = self._heads(self.k_proj(hidden_states))
        value = self._heads(self.v_proj(hidden_states))
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key)  # (B, heads, T, T)
        if attention_bias is not None:
            scores = scores + attention_bias
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        dropped = self.dropout(probs, deterministic=deterministic or not self.config.attention_dropout)
        context = jnp.einsum("bhqk,bkhd->bqhd", dropped, value)
        context = context.reshape(*context.shape[:2], self.config.hidden_size)
        return self.out_proj(context), (probs if output_attentions else None)


class CLIPMLP(_Block):
    def setup(self):
        self.activation = activation(ACTIVATIONS, self.config.hidden_act)
        self.fc1 = _dense(self, self.config.intermediate_size)
        self.fc2 = _dense(self, self.config.hidden_size)

    def __call__(self, hidden_states):
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CLIPEncoderLayer(_Block):
    """The pre-norm block; ``deterministic`` and ``output_attentions`` are positional (nn.remat)."""

    def setup(self):
        self.self_attn = CLIPAttention(self.config, **self._kwargs())
        self.layer_norm1 = _layer_norm(self)
        self.mlp = CLIPMLP(self.config, **self._kwargs())
        self.layer_norm2 = _layer_norm(self)

    def __call__(self, hidden_states, attention_bias=None, deterministic=True, output_attentions=False):
        normed = self.layer_norm1(hidden_states)
        attended, probs = self.self_attn(normed, attention_bias, deterministic, output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, probs


# With remat, the layer's activations are recomputed in the backward pass: same params, less memory.
# static_argnums count self: (deterministic, output_attentions) are arguments 3 and 4.
RematCLIPEncoderLayer = nn.remat(CLIPEncoderLayer, static_argnums=(3, 4))


class CLIPEncoderLayers(_Block):
    """The layer stack, named "0", "1", ... (transformers' Flax tree: ``encoder/layers/<i>``)."""

    remat: bool = False

    def setup(self):
        layer_cls = RematCLIPEncoderLayer if self.remat else CLIPEncoderLayer
        self.layers = [
            layer_cls(self.config, **self._kwargs(), name=str(i))
            for i in range(self.config.num_hidden_layers)
        ]

    def __call__(
        self,
        hidden_states,
        attention_bias=None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
    ):
        """The layer loop; under nn.remat each layer is recomputed in the backward pass."""

        def call(layer, x):  # positional: nn.remat's static arguments cannot be keywords
            return layer(x, attention_bias, deterministic, output_attentions)

        return run_layers(self.layers, hidden_states, call, output_attentions, output_hidden_states)


class CLIPEncoder(_Block):
    remat: bool = False

    def setup(self):
        self.layers = CLIPEncoderLayers(self.config, **self._kwargs(), remat=self.remat)

    def __call__(self, hidden_states, attention_bias=None, deterministic=True, **flags):
        return self.layers(hidden_states, attention_bias, deterministic, **flags)


# Text and vision transformers


def text_attention_bias(seq_len, attention_mask, dtype=jnp.float32):
    """clip_torch.modeling.text_attention_bias in jnp ops (static seq_len under jit)."""
    most_negative = jnp.asarray(jnp.finfo(dtype).min, dtype)
    bias = jnp.where(jnp.tril(jnp.ones((seq_len, seq_len), bool)), jnp.zeros((), dtype), most_negative)[
        None, None
    ]
    if attention_mask is not None:
        bias = bias + (1.0 - attention_mask.astype(dtype))[:, None, None, :] * most_negative
    return bias


def first_index_where(condition):
    """Index of the first True per row ((B, T) -> (B,)); 0 for a row with none (as torch's argmax)."""
    return jnp.argmax(condition, axis=-1)


class CLIPTextTransformer(_Block):
    remat: bool = False

    def setup(self):
        self.embeddings = CLIPTextEmbeddings(self.config, **self._kwargs())
        self.encoder = CLIPEncoder(self.config, **self._kwargs(), remat=self.remat)
        self.final_layer_norm = _layer_norm(self)

    def __call__(
        self,
        input_ids,
        attention_mask: jnp.ndarray | None = None,
        position_ids: jnp.ndarray | None = None,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
    ):
        hidden_states = self.embeddings(input_ids, position_ids=position_ids)
        bias = text_attention_bias(input_ids.shape[-1], attention_mask, self.dtype)
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            bias,
            deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        last = self.final_layer_norm(last)
        pooled = jnp.take_along_axis(last, self.pooling_positions(input_ids)[:, None, None], axis=1)[:, 0]
        return outputs.BaseModelOutputWithPooling(last, pooled, all_hidden, attentions)

    def pooling_positions(self, input_ids):
        """First eos (or, for legacy configs, the largest id) per row, for take_along_axis."""
        if self.config.uses_legacy_eos_pooling:
            return first_index_where(input_ids == jnp.max(input_ids, axis=-1, keepdims=True))
        return first_index_where(input_ids == self.config.eos_token_id)


class CLIPVisionTransformer(_Block):
    remat: bool = False

    def setup(self):
        self.embeddings = CLIPVisionEmbeddings(self.config, **self._kwargs())
        self.pre_layrnorm = _layer_norm(self)  # sic: the canonical name
        self.encoder = CLIPEncoder(self.config, **self._kwargs(), remat=self.remat)
        self.post_layernorm = _layer_norm(self)

    def __call__(
        self,
        pixel_values,
        deterministic=True,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
    ):
        hidden_states = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        last, all_hidden, attentions = self.encoder(
            hidden_states,
            None,
            deterministic,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = self.post_layernorm(last[:, 0, :])
        return outputs.BaseModelOutputWithPooling(last, pooled, all_hidden, attentions)


# Loss


def contrastive_loss(logits):
    """Minus the mean diagonal of the row-wise log_softmax, in float32."""
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return -jnp.mean(jnp.diagonal(log_probs))


def clip_loss(logits_per_text):
    """The symmetric loss in float32 whatever the compute dtype (jit- and grad-friendly)."""
    logits = jnp.asarray(logits_per_text, jnp.float32)
    return (contrastive_loss(logits) + contrastive_loss(logits.T)) / 2.0


def l2_normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# Linen modules of the public classes (input checks on what JAX knows while tracing: shapes
# always, id values when concrete)


def _shape(x):
    return None if x is None else tuple(np.shape(x))


class _Head(_Block):
    remat: bool = False

    def _tower_kwargs(self) -> dict:
        return dict(**self._kwargs(), remat=self.remat)

    def _text_inputs(self, config, input_ids, attention_mask, position_ids):
        """The text inputs, checked on what JAX knows: shapes always, id values when concrete."""
        id_range, integer = None, True
        if input_ids is not None and not isinstance(input_ids, jax.core.Tracer) and np.size(input_ids):
            ids = np.asarray(input_ids)
            integer = np.issubdtype(ids.dtype, np.integer)
            id_range = (int(ids.min()), int(ids.max())) if integer else None
        shapes = map(_shape, (input_ids, attention_mask, position_ids))
        validation.check_text_inputs(config, *shapes, id_range=id_range, integer_ids=integer)
        return input_ids, attention_mask, position_ids

    def _pixel_inputs(self, config, pixel_values, interpolate_pos_encoding):  # channels-last here
        validation.check_pixel_values(_shape(pixel_values), config, bool(interpolate_pos_encoding), True)
        return pixel_values


class _TextModule(_Head):
    """FlaxCLIPTextModule and, with ``with_projection``, FlaxCLIPTextModelWithProjectionModule."""

    with_projection = False

    def setup(self):
        self.text_model = CLIPTextTransformer(self.config, **self._tower_kwargs())
        if self.with_projection:
            self.text_projection = _dense(self, self.config.projection_dim, use_bias=False)

    def __call__(
        self,
        input_ids,
        attention_mask: jnp.ndarray | None = None,
        position_ids: jnp.ndarray | None = None,
        deterministic=True,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        inputs = self._text_inputs(self.config, input_ids, attention_mask, position_ids)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        output = self.text_model(*inputs, deterministic, **flags)
        if self.with_projection:
            output = text_output(output, self.text_projection(output.pooler_output))
        return as_requested(output, self.config, return_dict)


class _VisionModule(_Head):
    """FlaxCLIPVisionModule and, with ``with_projection``, FlaxCLIPVisionModelWithProjectionModule."""

    with_projection = False

    def setup(self):
        self.vision_model = CLIPVisionTransformer(self.config, **self._tower_kwargs())
        if self.with_projection:
            self.visual_projection = _dense(self, self.config.projection_dim, use_bias=False)

    def __call__(
        self,
        pixel_values,
        deterministic=True,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        interpolate_pos_encoding=False,
    ):
        pixels = self._pixel_inputs(self.config, pixel_values, interpolate_pos_encoding)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        output = self.vision_model(
            pixels, deterministic, **flags, interpolate_pos_encoding=interpolate_pos_encoding
        )
        if self.with_projection:
            output = vision_output(output, self.visual_projection(output.pooler_output))
        return as_requested(output, self.config, return_dict)


class FlaxCLIPTextModule(_TextModule):
    """Linen module of FlaxCLIPTextModel (``module.apply({"params": p}, input_ids, ...)``)."""


class FlaxCLIPTextModelWithProjectionModule(_TextModule):
    """Linen module of FlaxCLIPTextModelWithProjection."""

    with_projection = True


class FlaxCLIPVisionModule(_VisionModule):
    """Linen module of FlaxCLIPVisionModel (channels-last pixel_values, as transformers')."""


class FlaxCLIPVisionModelWithProjectionModule(_VisionModule):
    """Linen module of FlaxCLIPVisionModelWithProjection."""

    with_projection = True


class FlaxCLIPModule(_Head):
    """Linen module of FlaxCLIPModel; get_text_features / get_image_features as ``method=``."""

    def setup(self):
        cfg = self.config
        self.text_model = CLIPTextTransformer(cfg.text_config, **self._tower_kwargs())
        self.vision_model = CLIPVisionTransformer(cfg.vision_config, **self._tower_kwargs())
        self.visual_projection = _dense(self, cfg.projection_dim, use_bias=False)
        self.text_projection = _dense(self, cfg.projection_dim, use_bias=False)
        init = nn.initializers.constant(cfg.logit_scale_init_value)
        self.logit_scale = self.param("logit_scale", init, (), self.param_dtype)

    def get_text_features(self, input_ids, attention_mask=None, position_ids=None, deterministic=True):
        """The Linen method behind FlaxCLIPModel.get_text_features."""
        inputs = self._text_inputs(self.config.text_config, input_ids, attention_mask, position_ids)
        text = self.text_model(*inputs, deterministic)
        return self.text_projection(text.pooler_output)

    def get_image_features(self, pixel_values, deterministic=True, interpolate_pos_encoding=False):
        """The Linen method behind FlaxCLIPModel.get_image_features."""
        pixels = self._pixel_inputs(self.config.vision_config, pixel_values, interpolate_pos_encoding)
        vision = self.vision_model(pixels, deterministic, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.visual_projection(vision.pooler_output)

    def __call__(
        self,
        input_ids,
        pixel_values,
        attention_mask: jnp.ndarray | None = None,
        position_ids: jnp.ndarray | None = None,
        deterministic=True,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        interpolate_pos_encoding=False,
        return_loss=False,
    ):
        inputs, pixels = clip_inputs(
            self, input_ids, pixel_values, attention_mask, position_ids, interpolate_pos_encoding, return_loss
        )
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        vision = self.vision_model(
            pixels, deterministic, **flags, interpolate_pos_encoding=interpolate_pos_encoding
        )
        text = self.text_model(*inputs, deterministic, **flags)
        # Normalisation and logits in float32 whatever the compute dtype (stable logits and loss).
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output).astype(jnp.float32))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output).astype(jnp.float32))
        logits_per_text = (text_embeds @ image_embeds.T) * jnp.exp(self.logit_scale.astype(jnp.float32))
        loss = clip_loss(logits_per_text) if return_loss else None
        output = clip_output(text, vision, text_embeds, image_embeds, logits_per_text, jnp.transpose, loss)
        return as_requested(output, self.config, return_dict)


# Public classes: a Linen module plus the params it runs with


class _TextPreTrainedModel(FlaxCLIPPreTrainedModel):
    def __call__(
        self,
        input_ids: jnp.ndarray | None = None,
        attention_mask: jnp.ndarray | None = None,
        position_ids: jnp.ndarray | None = None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        validation.require_inputs(input_ids=input_ids)
        ids = map(ids_array, (input_ids, attention_mask, position_ids))
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        return self._apply(params, dropout_rng, train, *ids, **flags, return_dict=return_dict)


class _VisionPreTrainedModel(FlaxCLIPPreTrainedModel):
    def __call__(
        self,
        pixel_values: jnp.ndarray | None = None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        interpolate_pos_encoding=False,
    ):
        validation.require_inputs(pixel_values=pixel_values)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        options = dict(
            **flags, return_dict=return_dict, interpolate_pos_encoding=bool(interpolate_pos_encoding)
        )
        pixels = module_pixels(pixel_values, self.config, interpolate_pos_encoding)
        return self._apply(params, dropout_rng, train, pixels, **options)


class FlaxCLIPTextModel(_TextPreTrainedModel):
    """The text tower with its params: last_hidden_state and pooler_output (the end-of-text state).

    Args:
        config: the text tower's config (its dict and transformers' configs are converted).
        dtype: the compute dtype (jnp.bfloat16 for bf16); param_dtype: the params' dtype.
        remat: recompute each layer in the backward pass (nn.remat).

    Example:
        >>> model = FlaxCLIPTextModel.from_pretrained("path/to/clip")
        >>> out = model(**tokenizer(["a photo of a cat"], return_tensors="np", padding=True))
        >>> out = jax.jit(lambda p, ids: model(ids, params=p))(model.params, ids)  # params as input
    """

    module_class = FlaxCLIPTextModule
    model_kind = "text"


class FlaxCLIPTextModelWithProjection(_TextPreTrainedModel):
    """The text tower and text_projection with their params: ``text_embeds`` (not normalised)."""

    module_class = FlaxCLIPTextModelWithProjectionModule
    model_kind = "text_with_projection"


class FlaxCLIPVisionModel(_VisionPreTrainedModel):
    """The vision tower with its params: last_hidden_state and pooler_output (the class token).

    Example:
        >>> model = FlaxCLIPVisionModel.from_pretrained("path/to/clip", jnp.bfloat16)  # dtype as transformers
        >>> out = model(pixel_values=processor(images=images, return_tensors="np")["pixel_values"])
    """

    module_class = FlaxCLIPVisionModule
    model_kind = "vision"


class FlaxCLIPVisionModelWithProjection(_VisionPreTrainedModel):
    """The vision tower and visual_projection with their params: ``image_embeds`` (not normalised)."""

    module_class = FlaxCLIPVisionModelWithProjectionModule
    model_kind = "vision_with_projection"


class FlaxCLIPModel(FlaxCLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature, with their params.

    Args:
        config: the model's CLIPConfig (its dict and transformers' CLIPConfig are converted).
        input_shape: ((batch, seq), (batch, channels, height, width)) for the random init.
        seed, dtype, param_dtype, remat, _do_init: as transformers' FlaxCLIPModel (+ remat).

    Example:
        >>> model = FlaxCLIPModel.from_pretrained("path/to/clip")
        >>> out = model(**processor(text=texts, images=images, return_tensors="np", padding=True))
        >>> probs = jax.nn.softmax(out.logits_per_image, axis=-1)
        >>> loss = model(**inputs, params=params, return_loss=True, train=True, dropout_rng=rng).loss
    """

    module_class = FlaxCLIPModule
    model_kind = "clip"

    def __call__(
        self,
        input_ids: jnp.ndarray | None = None,
        pixel_values: jnp.ndarray | None = None,
        attention_mask: jnp.ndarray | None = None,
        position_ids: jnp.ndarray | None = None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        return_loss=False,
        interpolate_pos_encoding=False,
    ):
        validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
        flags = output_flags(self.config, output_attentions, output_hidden_states)
        pixels = module_pixels(pixel_values, self.config.vision_config, interpolate_pos_encoding)
        inputs = (ids_array(input_ids), pixels, ids_array(attention_mask), ids_array(position_ids))
        options = dict(return_dict=return_dict, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        return self._apply(
            params, dropout_rng, train, *inputs, **flags, **options, return_loss=bool(return_loss)
        )

    def get_text_features(
        self,
        input_ids: jnp.ndarray | None = None,
        attention_mask: jnp.ndarray | None = None,
        position_ids: jnp.ndarray | None = None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """``text_projection`` of the pooled text state: a (B, projection_dim) jax.Array (jit-able)."""
        validation.require_inputs(input_ids=input_ids)
        ids = map(ids_array, (input_ids, attention_mask, position_ids))
        return self._apply(params, dropout_rng, train, *ids, method=FlaxCLIPModule.get_text_features)

    def get_image_features(
        self,
        pixel_values: jnp.ndarray | None = None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        """``visual_projection`` of the pooled image state: a (B, projection_dim) jax.Array (jit-able)."""
        validation.require_inputs(pixel_values=pixel_values)
        interpolate = dict(interpolate_pos_encoding=bool(interpolate_pos_encoding))
        method = FlaxCLIPModule.get_image_features
        pixels = module_pixels(pixel_values, self.config.vision_config, interpolate_pos_encoding)
        return self._apply(params, dropout_rng, train, pixels, **interpolate, method=method)


__all__ = [
    "FlaxCLIPModel",
    "FlaxCLIPModule",
    "FlaxCLIPPreTrainedModel",
    "FlaxCLIPTextModel",
    "FlaxCLIPTextModelWithProjection",
    "FlaxCLIPTextModelWithProjectionModule",
    "FlaxCLIPTextModule",
    "FlaxCLIPVisionModel",
    "FlaxCLIPVisionModelWithProjection",
    "FlaxCLIPVisionModelWithProjectionModule",
    "FlaxCLIPVisionModule",
    "clip_loss",
    "contrastive_loss",
]
