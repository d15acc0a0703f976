"""The JAX half of from_pretrained / save_pretrained, random init and running a Linen module.

``FlaxCLIPPreTrainedModel`` is the base of the five public classes in clip_flax.modeling: it holds
``config``, the Linen ``module`` and ``params`` (a plain nested dict keyed like
clip_core.layouts.to_flax_params, no "params" wrapper), draws random params by clip_core's rules
with JAX's generator, and applies the module with or without dropout. The framework-free flow is
clip_core.pretrained.PretrainedModelMixin.

As transformers' Flax classes: the wrappers take channels-first ``pixel_values`` and hand the
Linen modules channels-last ones (``module.apply({"params": p}, input_ids, pixels_nhwc, ...)``);
``input_shape`` and ``init_weights`` use the modules' shapes; ``from_pretrained(path, jnp.bfloat16)``
takes the compute dtype second; ``_do_init=False`` returns ``(model, params)``; ``to_bf16`` /
``to_fp16`` / ``to_fp32`` cast params.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

from clip_core import validation
from clip_core.layouts import canonical_name_from_flax, from_flax_params, to_flax_params
from clip_core.modeling_utils import as_config, check_attn_implementation, init_rule, is_embedding_table
from clip_core.names import DTYPE_NAMES
from clip_core.pretrained import PretrainedModelMixin


def ids_array(x):
    return None if x is None else jnp.asarray(x, jnp.int32)


def module_pixels(x, config, interpolate_pos_encoding=False):
    """Channels-first ``pixel_values`` (checked) as the channels-last array the Linen modules take."""
    if x is None:
        return None
    validation.check_pixel_values(np.shape(x), config, bool(interpolate_pos_encoding))
    return jnp.transpose(jnp.asarray(x, jnp.float32), (0, 2, 3, 1))


def _unwrapped(params) -> dict:
    params = unfreeze(params)
    return params["params"] if set(params) == {"params"} else params


class FlaxCLIPPreTrainedModel(PretrainedModelMixin):
    """Holds ``config``, ``module`` and ``params`` (a plain nested dict, no "params" wrapper).

    ``params`` is keyed like ``clip_core.layouts.to_flax_params``; from_pretrained / save_pretrained
    go through canonical numpy state (clip_core.pretrained).
    """

    module_class: type  # the Linen module the class runs
    framework = "flax"
    unsafe_format = "flax"  # save_pretrained(safe_serialization=False): flax_model.msgpack, as transformers

    def __init__(
        self,
        config,
        input_shape=None,
        seed: int = 0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        _do_init: bool = True,
        remat: bool = False,
        attn_implementation: str | None = None,
    ):
        self.config = as_config(config, self.config_class)
        self.dtype, self.param_dtype, self.remat = dtype, param_dtype, remat
        # One attention here, numerically "eager" (and "sdpa", a torch kernel of the same math).
        self.attn_implementation = check_attn_implementation(attn_implementation)
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
        """(B, T) for a text model, the module's channels-last (B, H, W, C) for a vision model, both
        in a tuple for CLIPModel (transformers' input_shape)."""
        if self.model_kind.startswith("text"):
            return (1, 1)
        vision = getattr(self.config, "vision_config", self.config)
        pixels = (1, vision.image_size, vision.image_size, vision.num_channels)
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

    def init_weights(self, rng, input_shape=None, params=None) -> dict:
        """Fresh random params for inputs of ``input_shape`` (the module's shapes, as
        ``model.input_shape``), drawn by clip_core's init rules. With ``params``, only the entries
        missing from them are drawn (transformers' use after a partial load)."""
        if params is not None:
            fresh = self.init_weights(rng, input_shape)
            given = flatten_dict(_unwrapped(params))
            return unflatten_dict({**flatten_dict(fresh), **given})
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
    def _loading_options(cls, *args, **kwargs):
        """transformers' Flax order: ``from_pretrained(path, dtype, ...)``."""
        if args:
            if "dtype" in kwargs or len(args) > 1:
                raise TypeError(
                    f"{cls.__name__}.from_pretrained takes one positional argument after the path: dtype"
                )
            kwargs["dtype"] = args[0]
        return (), kwargs

    @classmethod
    def _framework_dtype(cls, dtype):
        """A jnp dtype from a name ("bfloat16"), a jnp / numpy dtype, or a torch dtype."""
        name = (
            dtype
            if isinstance(dtype, str)
            else getattr(dtype, "name", None) or getattr(dtype, "__name__", None)
        )
        name = str(name or dtype).removeprefix("torch.")
        if name not in DTYPE_NAMES:
            raise ValueError(
                f"dtype must be one of {DTYPE_NAMES} (or jnp.float32 / jnp.bfloat16 / jnp.float16), got {dtype!r}"
            )
        return getattr(jnp, name)

    @classmethod
    def _for_loading(
        cls, config, dtype=jnp.float32, param_dtype=jnp.float32, device_map=None, _do_init=True, **kwargs
    ):
        """``dtype`` is the compute dtype, ``param_dtype`` the params' dtype; also ``remat``.
        ``_do_init=False`` makes from_pretrained return ``(model, params)``, as transformers."""
        if device_map is not None:
            raise ValueError("device_map is a PyTorch option; in JAX place the params with jax.device_put")
        model = cls(config, dtype=dtype, param_dtype=param_dtype, _do_init=False, **kwargs)
        model._return_params = not _do_init
        return model

    def _after_loading(self):
        if self.__dict__.pop("_return_params", False):
            params, self._params = self._params, None  # held by the caller only, as transformers
            return self, params
        return self

    def save_pretrained(
        self, save_directory, params=None, formats=None, max_shard_size=None, **kwargs
    ) -> list[str]:
        """Write config.json and model.safetensors (canonical names); formats may add "flax"
        (flax_model.msgpack, as transformers' Flax classes read it), "pytorch" or "tf";
        ``safe_serialization=False`` writes flax_model.msgpack alone (transformers' Flax default)."""
        return self._save(save_directory, self.canonical_state(params), formats, max_shard_size, **kwargs)

    # -- transformers' FlaxPreTrainedModel API ------------------------------------------------

    def num_parameters(
        self, only_trainable: bool = False, exclude_embeddings: bool = False, params=None
    ) -> int:
        """Parameter count (``exclude_embeddings``: without the token and position embedding tables);
        every Flax param is trainable, so ``only_trainable`` counts them all."""
        return sum(
            int(np.prod(np.shape(a)))
            for name, a in _leaves_by_canonical_name(self._resolve_params(params)).items()
            if not (exclude_embeddings and is_embedding_table(name))
        )

    def to_bf16(self, params, mask=None):
        """The floating params cast to bfloat16 (a new tree; ``mask``: a tree of booleans, True = cast)."""
        return _cast_floating(params, jnp.bfloat16, mask)

    def to_fp16(self, params, mask=None):
        """The floating params cast to float16 (a new tree; ``mask`` as in to_bf16)."""
        return _cast_floating(params, jnp.float16, mask)

    def to_fp32(self, params, mask=None):
        """The floating params cast to float32 (a new tree; ``mask`` as in to_bf16)."""
        return _cast_floating(params, jnp.float32, mask)

    # -- running ---------------------------------------------------------------------------

    def _apply(self, params, dropout_rng, train, *args, method=None, **kwargs):
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        variables = {"params": self._resolve_params(params)}
        return self.module.apply(
            variables, *args, deterministic=not train, rngs=rngs, method=method, **kwargs
        )


def _leaves_by_canonical_name(params) -> dict:
    """{canonical name: leaf} of a params tree (shapes only are needed; nothing is copied)."""
    return {
        canonical_name_from_flax(tuple(str(getattr(k, "key", k)) for k in path)): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def _cast_floating(params, dtype, mask=None):
    """transformers' ``_cast_floating_to``: floating leaves cast to ``dtype`` where ``mask`` is True."""

    def cast(leaf, masked=True):
        floating = hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
        return jnp.asarray(leaf).astype(dtype) if floating and masked else leaf

    params = _unwrapped(params)
    if mask is None:
        return jax.tree_util.tree_map(cast, params)
    return jax.tree_util.tree_map(cast, params, _unwrapped(mask))
