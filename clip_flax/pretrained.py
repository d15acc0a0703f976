"""The JAX half of from_pretrained / save_pretrained, random init and running a Linen module.

``FlaxCLIPPreTrainedModel`` is the base of the five public classes in clip_flax.modeling: it holds
``config``, the Linen ``module`` and ``params`` (a plain nested dict keyed like
clip_core.layouts.to_flax_params, no "params" wrapper), draws random params by clip_core's rules
with JAX's generator, and applies the module with or without dropout. The framework-free flow is
clip_core.pretrained.PretrainedModelMixin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze

from clip_core.layouts import canonical_name_from_flax, from_flax_params, to_flax_params
from clip_core.modeling_utils import as_config, init_rule
from clip_core.pretrained import PretrainedModelMixin


def ids_array(x):
    return None if x is None else jnp.asarray(x, jnp.int32)


def pixels_array(x):
    return None if x is None else jnp.asarray(x, jnp.float32)


def _unwrapped(params) -> dict:
    params = unfreeze(params)
    return params["params"] if set(params) == {"params"} else params


class FlaxCLIPPreTrainedModel(PretrainedModelMixin):
    """Holds ``config``, ``module`` and ``params`` (a plain nested dict, no "params" wrapper).

    ``params`` is keyed like ``clip_core.layouts.to_flax_params``; from_pretrained / save_pretrained
    go through canonical numpy state (clip_core.pretrained).
    """

    module_class: type  # the Linen module the class runs

    def __init__(
        self,
        config,
        input_shape=None,
        seed: int = 0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        _do_init: bool = True,
        remat: bool = False,
    ):
        self.config = as_config(config, self.config_class)
        self.dtype, self.param_dtype, self.remat = dtype, param_dtype, remat
        self.module = self.module_class(self.config, dtype=dtype, param_dtype=param_dtype, remat=remat)
        self.input_shape = input_shape if input_shape is not None else self._default_input_shape()
        self._params = self.init_weights(jax.random.PRNGKey(seed), self.input_shape) if _do_init else None

    @property
    def params(self) -> dict:
        if self._params is None:
            raise ValueError(
                "this model was built with _do_init=False: set model.params or call init_weights"
            )
        return self._params

    @params.setter
    def params(self, params) -> None:
        self._params = _unwrapped(params)

    def _default_input_shape(self):
        """(B, T) for a text model, (B, C, H, W) for a vision model, both in a tuple for CLIPModel."""
        if self.model_kind.startswith("text"):
            return (1, 1)
        vision = getattr(self.config, "vision_config", self.config)
        pixels = (1, vision.num_channels, vision.image_size, vision.image_size)
        return pixels if self.model_kind.startswith("vision") else ((1, 1), pixels)

    def _dummy_inputs(self, rng, input_shape) -> tuple:
        """The module's positional inputs for ``input_shape`` (their values do not matter)."""
        if self.model_kind.startswith("vision"):
            return (jax.random.normal(rng, input_shape),)
        if self.model_kind.startswith("text"):
            ids = jnp.zeros(input_shape, jnp.int32)
            return ids, jnp.ones_like(ids)
        ids = jnp.zeros(input_shape[0], jnp.int32)
        return ids, jax.random.normal(rng, input_shape[1]), jnp.ones_like(ids)

    def _resolve_params(self, params):
        return self.params if params is None else _unwrapped(params)

    def init_weights(self, rng, input_shape=None) -> dict:
        """Fresh random params for inputs of ``input_shape``, drawn by clip_core's init rules."""
        input_shape = input_shape if input_shape is not None else self._default_input_shape()
        params_rng, dropout_rng = jax.random.split(rng)
        inputs = self._dummy_inputs(params_rng, input_shape)
        shapes = jax.eval_shape(self.module.init, {"params": params_rng, "dropout": dropout_rng}, *inputs)
        leaves, tree = jax.tree_util.tree_flatten_with_path(unfreeze(shapes)["params"])
        keys = jax.random.split(params_rng, len(leaves))
        values = []
        for key, (path, leaf) in zip(keys, leaves):
            rule, value = init_rule(canonical_name_from_flax(tuple(p.key for p in path)), self.config)
            draw = jax.random.normal(key, leaf.shape, jnp.float32) * value if rule == "normal" else None
            values.append((draw if draw is not None else jnp.full(leaf.shape, value)).astype(leaf.dtype))
        return jax.tree_util.tree_unflatten(tree, values)

    # -- checkpoints -----------------------------------------------------------------------

    def canonical_state(self, params=None) -> dict[str, np.ndarray]:
        """The params as canonical (transformers PyTorch layout) numpy arrays."""
        return from_flax_params(jax.device_get(self._resolve_params(params)))

    def _assign_canonical_state(self, state) -> None:
        tree = to_flax_params(state)
        self._params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, self.param_dtype), tree)

    @classmethod
    def _for_loading(cls, config, dtype=jnp.float32, param_dtype=jnp.float32, **kwargs):
        """``dtype`` is the compute dtype, ``param_dtype`` the params' dtype; also ``remat``."""
        return cls(config, dtype=dtype, param_dtype=param_dtype, _do_init=False, **kwargs)

    def save_pretrained(self, save_directory, params=None, formats=None, max_shard_size=None) -> list[str]:
        """Write config.json and model.safetensors (canonical names); formats may add "flax"
        (flax_model.msgpack, as transformers' Flax classes read it), "pytorch" or "tf"."""
        return self._save(save_directory, self.canonical_state(params), formats, max_shard_size)

    # -- running ---------------------------------------------------------------------------

    def _apply(self, params, dropout_rng, train, *args, method=None, **kwargs):
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        variables = {"params": self._resolve_params(params)}
        return self.module.apply(
            variables, *args, deterministic=not train, rngs=rngs, method=method, **kwargs
        )
