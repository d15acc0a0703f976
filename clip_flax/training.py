"""Contrastive training of a FlaxCLIPModel with optax, sharded over a jax.sharding Mesh.

The pieces, each a plain function or a small class:

- ``make_mesh(data, fsdp)``: a Mesh over all devices with a "data" axis and an "fsdp" axis. With
  several hosts it is a hybrid mesh: "data" runs across hosts (or TPU slices) and "fsdp" within
  one, so parameter all-gathers stay on the fast links (an fsdp axis wider than a host spans the
  fewest hosts it can). Parameters (and Adam's moments) are split along "fsdp" on their largest
  divisible dimension (``fsdp_spec``); every batch is split along both axes, ``P(("data", "fsdp"))``.
- The loss sees the GLOBAL batch as negatives. Softmax (CLIP): the towers run on the sharded batch
  and the ``[B, B]`` logits are built from the full embedding matrices; jit/GSPMD inserts the
  all-gathers. Sigmoid (SigLIP, ``TrainConfig(loss="sigmoid")``): ``chunked_sigmoid_loss`` keeps each
  device's image embeddings in place and passes the text embeddings around the ring of devices
  (``shard_map`` + ``jax.lax.ppermute``), one ``[b, b]`` block at a time, with a learnable bias
  ``logit_bias`` beside ``logit_scale`` (SigLIP's init: scale log 10, bias -10). Either way a step
  gives the same result however the batch is split across devices and hosts.
- ``make_optimizer``: AdamW with linear warm-up and cosine decay, global-norm clipping, weight
  decay only on kernels and embeddings (not biases, LayerNorm, class embedding or logit_scale),
  and an optionally frozen tower (LiT-style: its gradients are stopped and its updates are zero).
- Gradient accumulation for a contrastive loss cannot average micro-batch losses (each would see
  fewer negatives). ``Trainer`` uses the gradient-cache scheme instead: embed all micro-batches
  without keeping activations, take the loss and its gradient w.r.t. the embeddings over the full
  batch, then back-propagate each micro-batch's share through its tower. The result equals the
  big-batch gradient while holding only one micro-batch's activations.
- After each update ``logit_scale`` is clamped to at most ln(100), as in CLIP.
- ``Checkpointer`` saves the train state (params, optimizer state, step, RNG) and a JSON record with
  orbax (the record carries the data position of streamed input); a checkpoint is final when
  ``save`` returns, so a process killed right after it resumes from that step. A resumed run
  repeats the uninterrupted one exactly.
- Multi-host: ``initialize_distributed`` (explicit flags or JAX's auto-detection), ``hosts_agree``
  (every host must see the same data: a collective compares fingerprints and sample counts and
  names the host that differs), ``gather_rows`` and ``gather_params`` (export).
- ``evaluate``: zero-shot accuracy over class prompts and image->text / text->image recall@1/5.

bf16 compute with fp32 params: build the model with ``dtype=jnp.bfloat16`` (param_dtype stays
float32); the loss is always computed in float32. Remat: ``FlaxCLIPModel(..., remat=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip_flax.modeling import clip_loss

LOGIT_SCALE_MAX = math.log(100.0)
SIGLIP_LOGIT_SCALE_INIT = math.log(10.0)  # SigLIP's t' = log 10 (t = 10), b = -10
SIGLIP_LOGIT_BIAS_INIT = -10.0
LOSSES = ("softmax", "sigmoid")
BATCH_AXES = ("data", "fsdp")
TEXT_KEYS = ("text_model", "text_projection")
VISION_KEYS = ("vision_model", "visual_projection")
INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values")
EXTRA_PARAMS = ("logit_bias",)  # trained beside the model's params, not part of a CLIP checkpoint


def tiny_config() -> CLIPConfig:
    """A CLIP small enough to train in seconds on a CPU: 32 px images, 16-token texts, width 64."""
    text = CLIPTextConfig(
        hidden_size=64,
        intermediate_size=256,
        projection_dim=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=256,
        projection_dim=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


CONFIGS = {"tiny": tiny_config, "vit-b-32": CLIPConfig}


def init_params(config: CLIPConfig, seed: int = 0) -> dict:
    """Fresh params drawn on the host with numpy, with transformers' CLIP initialisation scales.

    The same distributions as ``FlaxCLIPModel(config)`` (normal weights, zero biases, LayerNorms at
    1/0, logit_scale at its init value), but with no tracing or compilation: on a CPU the model's
    own init compiles for longer than a short training run takes. Returns the nested Flax dict.
    """
    from clip_core.weights import canonical_shapes, param_kind, to_flax_params

    rng = np.random.default_rng(seed)
    towers = {"text_model": config.text_config, "vision_model": config.vision_config}
    state = {}
    for name, shape in canonical_shapes(config, "clip").items():
        parts = name.split(".")
        tower = towers.get(parts[0])
        f = config.initializer_factor
        kind = param_kind(name)
        if name == "logit_scale":
            state[name] = np.asarray(config.logit_scale_init_value, np.float32)
            continue
        if kind == "layer_norm" or name.endswith(".bias"):
            state[name] = (np.ones if kind == "layer_norm" and name.endswith("weight") else np.zeros)(
                shape, np.float32
            )
            continue
        if name == "text_projection.weight":
            std = config.text_config.hidden_size**-0.5 * f
        elif name == "visual_projection.weight":
            std = config.vision_config.hidden_size**-0.5 * f
        else:
            width, layers = tower.hidden_size, tower.num_hidden_layers
            module = parts[-2]
            if name.endswith("class_embedding"):
                std = width**-0.5 * f
            elif module in ("patch_embedding",) or (
                parts[0] == "vision_model" and module == "position_embedding"
            ):
                std = tower.initializer_range * f
            elif module in ("token_embedding", "position_embedding"):
                std = 0.02 * f
            elif module in ("q_proj", "k_proj", "v_proj", "fc2"):
                std = width**-0.5 * (2 * layers) ** -0.5 * f
            elif module == "out_proj":
                std = width**-0.5 * f
            elif module == "fc1":
                std = (2 * width) ** -0.5 * f
            else:
                raise ValueError(f"no initialisation rule for {name}")
        state[name] = rng.normal(0.0, std, shape).astype(np.float32)
    return to_flax_params(state)


# -------------------------------------------------------------------------------------------------
# Mesh and shardings


def make_mesh(data: int | None = None, fsdp: int = 1, devices: Sequence | None = None) -> Mesh:
    """A ("data", "fsdp") Mesh over ``devices`` (all of them by default), laid out by ``mesh_devices``."""
    return Mesh(mesh_devices(data, fsdp, devices), BATCH_AXES)


def mesh_devices(data: int | None = None, fsdp: int = 1, devices: Sequence | None = None) -> np.ndarray:
    """The [data, fsdp] array of devices; ``data`` defaults to the devices left by ``fsdp``.

    On one host the devices are laid out in order. On several, "data" runs across hosts (or TPU
    slices, when there are several) and "fsdp" within one, through
    ``mesh_utils.create_hybrid_device_mesh``: the fsdp all-gathers stay on a host's fast links, and
    each host's devices hold a contiguous block of every global batch. An fsdp axis wider than one
    host spans as few hosts as it can.
    """
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"fsdp={fsdp} does not divide the {len(devices)} devices")
    data = len(devices) // fsdp if data is None else data
    if data * fsdp != len(devices):
        raise ValueError(f"mesh {data} x {fsdp} does not match the {len(devices)} devices")
    slices = {getattr(d, "slice_index", 0) for d in devices}
    by_slice = len(slices) > 1
    granules = len(slices) if by_slice else len({d.process_index for d in devices})
    if granules == 1:
        return np.asarray(devices, dtype=object).reshape(data, fsdp)
    from jax.experimental import mesh_utils

    per_granule = len(devices) // granules
    if fsdp <= per_granule:
        if per_granule % fsdp:
            raise ValueError(f"fsdp={fsdp} does not divide the {per_granule} devices of each host")
        inner, outer = (per_granule // fsdp, fsdp), (granules, 1)
    else:
        if fsdp % per_granule:
            raise ValueError(f"fsdp={fsdp} is not a multiple of the {per_granule} devices of each host")
        inner, outer = (1, per_granule), (granules * per_granule // fsdp, fsdp // per_granule)
    return mesh_utils.create_hybrid_device_mesh(inner, outer, devices, process_is_granule=not by_slice)


def fsdp_spec(shape: Sequence[int], fsdp_size: int) -> P:
    """Split the largest dimension divisible by ``fsdp_size`` along "fsdp"; replicate if none is."""
    if fsdp_size <= 1:
        return P()
    candidates = [(d, i) for i, d in enumerate(shape) if d % fsdp_size == 0 and d >= fsdp_size]
    if not candidates:
        return P()
    _, axis = max(candidates, key=lambda c: (c[0], -c[1]))
    return P(*([None] * axis + ["fsdp"]))


def param_shardings(tree, mesh: Mesh):
    """NamedShardings for a tree of arrays (or ShapeDtypeStructs) by ``fsdp_spec``."""
    size = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), size)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


# -------------------------------------------------------------------------------------------------
# Optimizer


@dataclasses.dataclass
class TrainConfig:
    learning_rate: float = 5e-4
    warmup_steps: int = 0
    total_steps: int = 1000
    end_lr_fraction: float = 0.0
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    clip_norm: float | None = 1.0
    accum_steps: int = 1
    freeze: str | None = None  # None, "text" or "vision"
    seed: int = 0
    loss: str = "softmax"  # "softmax" (CLIP) or "sigmoid" (SigLIP, with a learnable logit_bias)
    logit_bias_init: float = SIGLIP_LOGIT_BIAS_INIT

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.freeze not in (None, "text", "vision"):
            raise ValueError(f"freeze must be None, 'text' or 'vision', got {self.freeze!r}")
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ValueError("total_steps must be >= 1 and warmup_steps >= 0")


def make_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then cosine decay to ``end_lr_fraction`` of it at total_steps."""
    warmup = min(cfg.warmup_steps, cfg.total_steps - 1) if cfg.total_steps > 1 else 0
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else cfg.learning_rate,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(cfg.total_steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.end_lr_fraction,
    )


def _path_keys(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decay_mask(params):
    """True for weights that get weight decay: Dense/conv kernels and embedding tables only."""

    def decays(path, leaf):
        return _path_keys(path)[-1] in ("kernel", "embedding") and np.ndim(leaf) >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def tower_of(path_keys: Sequence[str]) -> str:
    root = path_keys[0] if path_keys else ""
    return "text" if root in TEXT_KEYS else "vision" if root in VISION_KEYS else "shared"


def trainable_labels(params, freeze: str | None):
    """ "frozen" for the leaves of the frozen tower (and its projection), "train" for all others."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if freeze and tower_of(_path_keys(path)) == freeze else "train", params
    )


def make_optimizer(cfg: TrainConfig, params) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(cfg)
    parts = []
    if cfg.clip_norm:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(
            schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
        )
    )
    tx = optax.chain(*parts)
    if cfg.freeze:
        # The frozen tower has no optimizer state and zero updates; clipping sees only trained grads.
        tx = optax.multi_transform(
            {"train": tx, "frozen": optax.set_to_zero()}, trainable_labels(params, cfg.freeze)
        )
    return tx, schedule


def clamp_logit_scale(params):
    params = dict(params)
    params["logit_scale"] = jnp.minimum(params["logit_scale"], LOGIT_SCALE_MAX)
    return params


# -------------------------------------------------------------------------------------------------
# Loss


def embed(module, params, batch, rng=None, deterministic: bool = True):
    """(text_embeds, image_embeds): projected, L2-normalised, float32."""
    rngs = {} if deterministic or rng is None else {"dropout": rng}
    variables = {"params": params}
    text = module.apply(
        variables,
        batch["input_ids"],
        batch["attention_mask"],
        None,
        deterministic,
        rngs=rngs,
        method="get_text_features",
    )
    pixels = jnp.transpose(batch["pixel_values"], (0, 2, 3, 1))  # the Linen module takes channels-last
    image = module.apply(variables, pixels, deterministic, rngs=rngs, method="get_image_features")
    text, image = text.astype(jnp.float32), image.astype(jnp.float32)
    text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
    image = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
    return text, image


def loss_from_embeddings(text, image, logit_scale):
    """Symmetric CLIP loss over the whole batch: every other pair is a negative."""
    logits_per_text = jnp.exp(logit_scale.astype(jnp.float32)) * text @ image.T
    return clip_loss(logits_per_text)


def _sigmoid_block(text, image, scale, bias, positives: bool):
    """-sum log sigmoid(z * (scale * image @ text.T + bias)) of one [b_image, b_text] block; z is +1 on
    the diagonal when the block pairs each image with its own text (``positives``), -1 elsewhere."""
    logits = scale * image @ text.T + bias
    sign = 2.0 * jnp.eye(*logits.shape, dtype=logits.dtype) - 1.0 if positives else -1.0
    return -jnp.sum(jax.nn.log_sigmoid(sign * logits))


def sigmoid_loss(text, image, logit_scale, logit_bias):
    """SigLIP's pairwise sigmoid loss over the whole batch, unchunked: the [B, B] logits at once.

    Each (image, text) pair is a binary example, positive on the diagonal; summed over the texts and
    averaged over the images (big_vision's normalisation)."""
    scale = jnp.exp(jnp.asarray(logit_scale, jnp.float32))
    bias = jnp.asarray(logit_bias, jnp.float32)
    return _sigmoid_block(text, image, scale, bias, True) / text.shape[0]


def chunked_sigmoid_loss(text, image, logit_scale, logit_bias, mesh: Mesh, axes=BATCH_AXES):
    """``sigmoid_loss`` with the batch split over ``axes`` of ``mesh``, never forming the [B, B] logits.

    Every device holds its images and texts (b = B / devices of each). It scores its own block
    (positives on the diagonal), then passes its texts to the next device on the ring with
    ``jax.lax.ppermute`` and scores the block it receives (all negatives), devices - 1 times, so each
    device meets every text once and holds one [b, b] block at a time; the sums are then added over
    the devices. Gradients flow back around the ring (ppermute's transpose is the reverse ring).
    Equal to the unchunked loss and its gradients up to float summation order.
    """
    from jax import shard_map

    n = int(np.prod([mesh.shape[a] for a in axes]))
    ring = [(i, (i + 1) % n) for i in range(n)]

    def local(t, i, log_scale, b):
        scale = jnp.exp(log_scale.astype(jnp.float32))
        b = b.astype(jnp.float32)
        total = _sigmoid_block(t, i, scale, b, True)

        def visit(carry, _):
            t_other, acc = carry
            t_other = jax.lax.ppermute(t_other, axes, ring)
            return (t_other, acc + _sigmoid_block(t_other, i, scale, b, False)), None

        if n > 1:
            (_, total), _ = jax.lax.scan(visit, (t, total), None, length=n - 1)
        return jax.lax.psum(total, axes) / (t.shape[0] * n)

    return shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes), P(), P()), out_specs=P())(
        text, image, jnp.asarray(logit_scale), jnp.asarray(logit_bias)
    )


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    def as_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}


def model_params(params) -> dict:
    """The model's own params: ``params`` without the trained extras (``logit_bias``)."""
    return {k: v for k, v in params.items() if k not in EXTRA_PARAMS}


class Trainer:
    """Jitted, sharded train and embedding steps for one model, optimizer and mesh.

    ``state = trainer.init_state(model.params)``; ``state, metrics = trainer.step(state, batch)``
    with ``batch`` this host's numpy share (``input_ids``, ``attention_mask``, ``pixel_values``) of
    the global batch, and optionally ``status``: per example 0, or 1 + the index of a host whose
    loader failed (its batch is a placeholder); the step reports the largest as ``data_error``.
    With the sigmoid loss the state's params hold ``logit_bias`` beside the model's.
    """

    def __init__(self, model, cfg: TrainConfig, mesh: Mesh | None = None, donate: bool = True) -> None:
        self.model, self.module, self.cfg = model, model.module, cfg
        self.mesh = mesh if mesh is not None else make_mesh()
        self.extras = {"logit_bias": np.float32(cfg.logit_bias_init)} if cfg.loss == "sigmoid" else {}
        abstract_params = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype),
            {**model_params(model.params), **self.extras},
        )
        self.abstract_params = abstract_params
        self.tx, self.schedule = make_optimizer(cfg, abstract_params)
        self.deterministic = not (
            model.config.text_config.attention_dropout or model.config.vision_config.attention_dropout
        )
        self.batch_sharding = batch_sharding(self.mesh)
        self.replicated = replicated(self.mesh)
        self.state_sharding = self._state_sharding(abstract_params)
        self._step = jax.jit(
            self._train_step,
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=(0,) if donate else (),
        )
        self._text = jax.jit(self._text_features, out_shardings=self.replicated)
        self._image = jax.jit(self._image_features, out_shardings=self.replicated)

    # -- state ------------------------------------------------------------------------------

    def _state_sharding(self, abstract_params) -> TrainState:
        opt_state = jax.eval_shape(self.tx.init, abstract_params)
        return TrainState(
            step=self.replicated,
            params=param_shardings(abstract_params, self.mesh),
            opt_state=param_shardings(opt_state, self.mesh),
            rng=self.replicated,
        )

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state (the target for a checkpoint restore)."""
        params = self.abstract_params
        shapes = TrainState(
            step=jax.ShapeDtypeStruct((), jnp.int32),
            params=params,
            opt_state=jax.eval_shape(self.tx.init, params),
            rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)),
        )
        return jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_sharding
        )

    def init_state(self, params=None, seed: int | None = None) -> TrainState:
        """A sharded train state at step 0 from ``params`` (the model's by default), cast to float32."""
        params = self.model.params if params is None else params
        params = {**self.extras, **model_params(params), **{k: params[k] for k in self.extras if k in params}}
        params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.device_get(params))
        params = jax.device_put(params, self.state_sharding.params)
        opt_state = jax.jit(self.tx.init, out_shardings=self.state_sharding.opt_state)(params)
        seed = self.cfg.seed if seed is None else seed
        rng = jax.device_put(jax.random.PRNGKey(seed), self.replicated)
        step = jax.device_put(jnp.zeros((), jnp.int32), self.replicated)
        return TrainState(step=step, params=params, opt_state=opt_state, rng=rng)

    # -- batches ----------------------------------------------------------------------------

    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's share of the global batch -> global arrays split along ("data", "fsdp")."""
        out = {}
        local_batch = dict(local_batch)
        if "status" not in local_batch:
            local_batch["status"] = np.zeros(len(local_batch["input_ids"]), np.int32)
        for key in (*INPUT_KEYS, "status"):
            local = np.asarray(local_batch[key])
            global_shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
            out[key] = jax.make_array_from_process_local_data(self.batch_sharding, local, global_shape)
        return out

    def check_batch_size(self, batch_size: int) -> None:
        shards = batch_shards(self.mesh)
        if batch_size % (shards * self.cfg.accum_steps):
            raise ValueError(
                f"batch size {batch_size} must be divisible by the {shards} batch shards times "
                f"{self.cfg.accum_steps} accumulation steps"
            )

    # -- the step ---------------------------------------------------------------------------

    def _stop_frozen(self, params):
        if not self.cfg.freeze:
            return params
        return {
            k: jax.lax.stop_gradient(v) if tower_of([k]) == self.cfg.freeze else v for k, v in params.items()
        }

    def _embed(self, params, batch, rng):
        return embed(self.module, self._stop_frozen(model_params(params)), batch, rng, self.deterministic)

    def _contrastive(self, text, image, scalars):
        """The loss of the global batch from its embeddings; ``scalars``: logit_scale (and logit_bias)."""
        if self.cfg.loss == "sigmoid":
            return chunked_sigmoid_loss(text, image, scalars["logit_scale"], scalars["logit_bias"], self.mesh)
        return loss_from_embeddings(text, image, scalars["logit_scale"])

    def _scalars(self, params) -> dict:
        return {k: params[k] for k in ("logit_scale", *self.extras)}

    def _loss_and_grads(self, params, batch, rng):
        k = self.cfg.accum_steps
        if k == 1:

            def loss_fn(p):
                text, image = self._embed(p, batch, rng)
                return self._contrastive(text, image, self._scalars(p))

            return jax.value_and_grad(loss_fn)(params)

        # Gradient cache: micro-batch j holds examples j, j + k, j + 2k, ... so that every
        # micro-batch stays split over all batch shards (the loss does not depend on the order).
        size = batch["input_ids"].shape[0]
        micro = jax.tree_util.tree_map(
            lambda x: jax.lax.with_sharding_constraint(
                x.reshape(size // k, k, *x.shape[1:]).swapaxes(0, 1),
                NamedSharding(self.mesh, P(None, BATCH_AXES)),
            ),
            batch,
        )
        keys = jax.random.split(rng, k)

        def embed_micro(p, mb, key):
            return self._embed(p, mb, key)

        text, image = jax.lax.map(lambda xs: embed_micro(params, *xs), (micro, keys))
        dim = text.shape[-1]
        loss, (g_text, g_image, g_scalars) = jax.value_and_grad(self._contrastive, argnums=(0, 1, 2))(
            text.reshape(size, dim), image.reshape(size, dim), self._scalars(params)
        )
        g_text, g_image = g_text.reshape(k, size // k, dim), g_image.reshape(k, size // k, dim)

        def backprop(acc, xs):
            mb, key, gt, gi = xs
            _, vjp = jax.vjp(lambda p: embed_micro(p, mb, key), params)
            (grads,) = vjp((gt, gi))
            return jax.tree_util.tree_map(jnp.add, acc, grads), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        grads, _ = jax.lax.scan(backprop, zeros, (micro, keys, g_text, g_image))
        grads = dict(grads)
        for key, g in g_scalars.items():
            grads[key] = grads[key] + g
        return loss, grads

    def _train_step(self, state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        loss, grads = self._loss_and_grads(state.params, batch, rng)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = clamp_logit_scale(optax.apply_updates(state.params, updates))
        metrics = {
            "loss": loss,
            "lr": self.schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
            "logit_scale": params["logit_scale"],
            "data_error": jnp.max(batch["status"]),
        }
        metrics.update({k: params[k] for k in self.extras})
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        """One optimizer step on a global batch (numpy host shares are put on the mesh first)."""
        if not isinstance(batch.get("input_ids"), jax.Array):
            batch = self.put_batch(batch)
        else:
            batch = {k: batch[k] for k in (*INPUT_KEYS, "status")}
        return self._step(state, batch)

    # -- features for evaluation ----------------------------------------------------------------

    def _text_features(self, params, ids, mask):
        f = self.module.apply(
            {"params": model_params(params)}, ids, mask, None, True, method="get_text_features"
        )
        f = f.astype(jnp.float32)
        return f / jnp.linalg.norm(f, axis=-1, keepdims=True)

    def _image_features(self, params, pixels):
        pixels = jnp.transpose(pixels, (0, 2, 3, 1))  # channels-first batches, channels-last module
        f = self.module.apply({"params": model_params(params)}, pixels, True, method="get_image_features")
        f = f.astype(jnp.float32)
        return f / jnp.linalg.norm(f, axis=-1, keepdims=True)

    def _encode(self, fn, params, arrays: Sequence[np.ndarray], chunk: int) -> np.ndarray:
        """Run ``fn`` over the rows of ``arrays`` in chunks split across the mesh (every host passes
        the same arrays); returns normalised features as numpy."""
        n = len(arrays[0])
        shards = batch_shards(self.mesh)
        chunk = max(shards, chunk // shards * shards)
        outs = []
        for start in range(0, n, chunk):
            parts = [np.asarray(a[start : start + chunk]) for a in arrays]
            m = len(parts[0])
            pad = chunk - m  # every call has the same shape: one compilation per function
            if pad:
                parts = [np.concatenate([p, np.repeat(p[-1:], pad, axis=0)]) for p in parts]
            rows = len(parts[0]) // jax.process_count()
            lo = jax.process_index() * rows
            parts = [
                jax.make_array_from_process_local_data(self.batch_sharding, p[lo : lo + rows], p.shape)
                for p in parts
            ]
            outs.append(np.asarray(fn(params, *parts))[:m])
        return np.concatenate(outs)

    def text_features(self, params, input_ids, attention_mask, chunk: int = 64) -> np.ndarray:
        return self._encode(self._text, params, [input_ids, attention_mask], chunk)

    def image_features(self, params, pixel_values, chunk: int = 64) -> np.ndarray:
        return self._encode(self._image, params, [pixel_values], chunk)


# -------------------------------------------------------------------------------------------------
# Evaluation


def recall_at_k(similarity: np.ndarray, captions: Sequence[str], ks: Sequence[int] = (1, 5)) -> dict:
    """Image->text and text->image recall@k for a [images, texts] similarity of paired examples.

    Identical captions are one text: image->text ranks the distinct captions (otherwise the top k of
    a set with repeated captions is k copies of one text), and text->image counts an image as correct
    when its own caption equals the query. With unique captions both are the usual definitions.
    """
    captions = np.asarray(captions, dtype=object)
    _, first, caption_ids = np.unique(captions, return_index=True, return_inverse=True)
    caption_ids = caption_ids.reshape(-1)
    out = {}
    i2t = np.argsort(-similarity[:, first], axis=1, kind="stable")  # ranks of distinct captions
    t2i = np.argsort(-similarity.T, axis=1, kind="stable")
    for name, hits in (
        ("i2t", i2t == caption_ids[:, None]),
        ("t2i", caption_ids[t2i] == caption_ids[:, None]),
    ):
        for k in ks:
            out[f"{name}_r@{k}"] = float(np.mean(hits[:, :k].any(axis=1)))
    return out


def evaluate(
    trainer: Trainer,
    params,
    eval_set: dict,
    class_names: Sequence[str],
    processor,
    max_length: int,
    templates: Sequence[str] = ("a {}",),
) -> dict:
    """Zero-shot accuracy (when there are classes and labels) and retrieval recall on held-out arrays
    from clip_flax.data.encode_eval_set."""
    from clip_flax.data import tokenize

    image = trainer.image_features(params, eval_set["pixel_values"])
    text = trainer.text_features(params, eval_set["input_ids"], eval_set["attention_mask"])
    metrics = recall_at_k(image @ text.T, eval_set["captions"])
    labels = np.asarray(eval_set["labels"])
    if class_names and (labels >= 0).any():
        prompts = [t.format(c) for c in class_names for t in templates]
        tok = tokenize(processor, prompts, max_length)
        cls = trainer.text_features(params, tok["input_ids"], tok["attention_mask"])
        cls = cls.reshape(len(class_names), len(templates), -1).mean(axis=1)
        cls /= np.linalg.norm(cls, axis=-1, keepdims=True)
        keep = labels >= 0
        pred = np.argmax(image[keep] @ cls.T, axis=1)
        metrics["zero_shot_acc"] = float(np.mean(pred == labels[keep]))
        metrics["chance"] = 1.0 / len(class_names)
    metrics["eval_examples"] = len(labels)
    return metrics


# -------------------------------------------------------------------------------------------------
# Checkpoints


class Checkpointer:
    """orbax CheckpointManager of the train state plus a JSON record (config, seed, batch size...).

    ``save`` returns once the checkpoint is final (orbax's ``wait_until_finished``): the state is
    copied off the devices and written, then committed, before training goes on. A process killed
    at any moment after ``save`` returned resumes from that step."""

    def __init__(self, directory: str, save_every: int = 1000, max_to_keep: int | None = 3) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(1, save_every), max_to_keep=max_to_keep, create=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, record: dict, force: bool = False) -> bool:
        """Save (every host calls it); True if a checkpoint was written, final when this returns."""
        ocp = self._ocp
        step = int(jax.device_get(state.step))
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.as_dict()), record=ocp.args.JsonSave(record)
            ),
            force=force,
        )
        self.manager.wait_until_finished()
        return saved

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state.as_dict()), record=ocp.args.JsonRestore()
            ),
        )
        return TrainState(**out["state"]), dict(out["record"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# -------------------------------------------------------------------------------------------------
# Several hosts


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> None:
    """``jax.distributed.initialize`` with whatever is given; JAX detects the rest (TPU pods, SLURM,
    Open MPI; and JAX_COORDINATOR_ADDRESS / JAX_LOCAL_DEVICE_IDS from the environment)."""
    given = {
        "coordinator_address": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
        "local_device_ids": list(local_device_ids) if local_device_ids is not None else None,
    }
    jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every host's ``local`` rows (same shape on each host), concatenated in host order."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def gather_params(params) -> dict:
    """The full value of sharded params as numpy on every host (a collective: every host calls it)."""
    if jax.process_count() == 1:
        return jax.device_get(params)
    from jax.experimental import multihost_utils

    # Global arrays that no host holds entirely: tiled=True returns their full (global) value.
    return multihost_utils.process_allgather(params, tiled=True)


def _digest_words(fingerprint: str) -> list[int]:
    """The first 128 bits of a hex digest as four int32s (what a host collective carries)."""
    raw = bytes.fromhex(fingerprint)[:16].ljust(16, b"\0")
    return np.frombuffer(raw, np.int32).tolist()


class HostsDisagree(ValueError):
    """The hosts of a multi-host run do not see the same data."""


def hosts_agree(
    fingerprint: str, count: int, what: str, unit: str = "samples", error: str | None = None
) -> None:
    """Check through a collective that every host sees the same data (every host calls it).

    ``fingerprint`` (a hex digest) and ``count`` (of ``unit``: samples, files) must be equal on all
    hosts. A host that could not read its data at all passes its ``error`` instead. Every host raises the same HostsDisagree when they
    differ, naming the hosts that differ from the rest (or that failed, with their errors), so that
    none is left waiting in a later collective.
    """
    if error is not None:
        publish_host_error(error)
    words = [0, 0, 0, 0] if error is not None else _digest_words(fingerprint)
    row = np.asarray([*words, int(count), int(error is not None)], np.int64)
    rows = gather_rows(row[None]).reshape(-1, len(row))
    failed = [h for h, r in enumerate(rows) if r[-1]]
    if failed:
        me = jax.process_index()
        details = "; ".join(
            f"host {h}: {error if h == me else host_error(h) or 'see its log'}" for h in failed
        )
        raise HostsDisagree(f"reading the {what} failed on {details}")
    keys = [tuple(r[:5]) for r in rows]
    if len(set(keys)) <= 1:
        return
    groups: dict[tuple, list[int]] = {}
    for host, key in enumerate(keys):
        groups.setdefault(key, []).append(host)

    def describe(hosts: list[int]) -> str:
        r = rows[hosts[0]]
        digest = np.asarray(r[:4], np.int32).tobytes().hex()[:12]
        return f"host{'s' if len(hosts) > 1 else ''} {', '.join(map(str, hosts))} ({r[4]} {unit}, fingerprint {digest}...)"

    ordered = sorted(groups.values(), key=len, reverse=True)
    if len(ordered[0]) > len(rows) // 2:
        odd = ordered[1:]
        verb = "differs" if len(odd) == 1 and len(odd[0]) == 1 else "differ"
        detail = f"{'; '.join(describe(g) for g in odd)} {verb} from {describe(ordered[0])}"
    else:
        detail = "; ".join(describe(g) for g in ordered)
    raise HostsDisagree(
        f"the hosts do not see the same {what}: {detail}. Every host must read the same files "
        "(check the paths and copies on the hosts named)"
    )


def _distributed_client():
    from jax._src import distributed  # the coordination service's key-value store (no public API)

    return distributed.global_state.client


def publish_host_error(message: str) -> None:
    """Leave this host's error where the other hosts can read it (``host_error``); best effort."""
    try:
        client = _distributed_client()
        if client is not None:
            client.key_value_set(f"clip_flax/error/{jax.process_index()}", message)
    except Exception:  # the other hosts fall back to naming this host
        pass


def host_error(host: int, timeout_s: float = 10.0) -> str | None:
    """The error that ``host`` published with ``publish_host_error``, or None."""
    try:
        client = _distributed_client()
        if client is not None:
            return client.blocking_key_value_get(f"clip_flax/error/{host}", int(timeout_s * 1000))
    except Exception:
        pass
    return None


__all__ = [
    "CONFIGS",
    "Checkpointer",
    "HostsDisagree",
    "LOGIT_SCALE_MAX",
    "SIGLIP_LOGIT_BIAS_INIT",
    "SIGLIP_LOGIT_SCALE_INIT",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "chunked_sigmoid_loss",
    "clamp_logit_scale",
    "decay_mask",
    "embed",
    "evaluate",
    "fsdp_spec",
    "gather_params",
    "gather_rows",
    "host_error",
    "hosts_agree",
    "init_params",
    "initialize_distributed",
    "loss_from_embeddings",
    "make_mesh",
    "mesh_devices",
    "make_optimizer",
    "make_schedule",
    "model_params",
    "param_shardings",
    "publish_host_error",
    "recall_at_k",
    "sigmoid_loss",
    "tiny_config",
    "trainable_labels",
]
