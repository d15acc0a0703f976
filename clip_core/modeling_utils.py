"""What the three backends' model classes share that is not framework code.

Each backend's ``modeling.py`` keeps only what its framework needs (layers, tensor ops, autodiff
and compilation details); the rules below are written once:

- ``as_config``: a model's config from our config classes, their ``to_dict()`` (what Keras'
  ``get_config`` stores) or a transformers config object.
- ``output_flags`` / ``as_requested``: ``output_attentions``, ``output_hidden_states`` and
  ``return_dict`` given per call or, when None, taken from the config (as transformers does).
- ``clip_inputs``: CLIPModel's inputs checked together (each backend converts one tower's).
- ``run_layers``: the encoder's layer loop that collects hidden states and attention maps.
- ``text_output`` / ``vision_output`` / ``clip_output``: the output containers of the five
  public classes, built from a tower's output.
- ``activations``: transformers' ``hidden_act`` names, each formula written once over a
  framework's primitives.
- ``init_rule``: how transformers' PyTorch ``_init_weights`` initialises each canonical
  parameter (normal with which std, zeros, ones, a constant), used by all three backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from clip_core import validation
from clip_core.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip_core.outputs import CLIPOutput, CLIPTextModelOutput, CLIPVisionModelOutput

CONFIG_CLASSES = {cls.model_type: cls for cls in (CLIPConfig, CLIPTextConfig, CLIPVisionConfig)}

# ---------------------------------------------------------------------------------------------
# Configs and output options


def as_config(config, expected: type | tuple[type, ...]):
    """``config`` as one of the ``expected`` config classes.

    Accepts our config objects, their ``to_dict()`` (with or without ``model_type``) and
    transformers' config objects (anything with ``to_dict()``), converted field for field.
    """
    classes = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(config, classes):
        return config
    if not isinstance(config, dict) and callable(getattr(config, "to_dict", None)):
        # A transformers PretrainedConfig (or a look-alike): what its config.json would hold.
        to_dict = getattr(config, "to_diff_dict", None) or config.to_dict
        config = to_dict()
    if isinstance(config, dict):
        cls = CONFIG_CLASSES.get(config.get("model_type"))
        if cls is None and len(classes) == 1:
            cls = classes[0]
        if cls is not None:
            config = cls.from_dict(config)
    if not isinstance(config, classes):
        names = " or ".join(c.__name__ for c in classes)
        raise TypeError(f"expected a {names} (or its to_dict()), got {type(config).__name__}")
    return config


ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


def check_attn_implementation(name: str | None, default: str = "eager") -> str:
    """transformers' ``attn_implementation``: "eager" or "sdpa" (None: ``default``); flash and flex
    attention are refused. Only PyTorch has two kernels; TF and Flax compute the eager math."""
    if name is None:
        return default
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f'attn_implementation must be "eager" or "sdpa", got {name!r} (flash and flex attention are not supported)'
        )
    return name


def is_embedding_table(name: str) -> bool:
    """A token or position embedding table (what transformers' ``num_parameters(exclude_embeddings=True)``
    leaves out: its nn.Embedding modules)."""
    return name.endswith(("token_embedding.weight", "position_embedding.weight"))


def _config_default(config, name: str, default: bool) -> bool:
    value = getattr(config, name, None)  # our configs read transformers' defaults for unset attributes
    return bool(default if value is None else value)


def output_flags(config, output_attentions=None, output_hidden_states=None) -> dict[str, bool]:
    """{"output_attentions": ..., "output_hidden_states": ...}: the call's values, else the config's."""
    if output_attentions is None:
        output_attentions = _config_default(config, "output_attentions", False)
    if output_hidden_states is None:
        output_hidden_states = _config_default(config, "output_hidden_states", False)
    return {"output_attentions": bool(output_attentions), "output_hidden_states": bool(output_hidden_states)}


def wants_dict(config, return_dict=None) -> bool:
    return bool(return_dict) if return_dict is not None else _config_default(config, "return_dict", True)


def as_requested(output, config, return_dict=None):
    """The output container, or its tuple when ``return_dict`` (else the config's) is False."""
    return output if wants_dict(config, return_dict) else output.to_tuple()


def clip_inputs(
    model, input_ids, pixel_values, attention_mask, position_ids, interpolate_pos_encoding, return_loss
) -> tuple[tuple, Any]:
    """CLIPModel's inputs, converted and checked: ((input_ids, attention_mask, position_ids), pixels).

    ``model`` converts and checks each tower's inputs with its ``_text_inputs(config, ids, mask,
    positions)`` and ``_pixel_inputs(config, pixels, interpolate_pos_encoding)``.
    """
    validation.require_inputs(input_ids=input_ids, pixel_values=pixel_values)
    config = model.config
    text = model._text_inputs(config.text_config, input_ids, attention_mask, position_ids)
    pixels = model._pixel_inputs(config.vision_config, pixel_values, interpolate_pos_encoding)
    if return_loss:  # batch sizes unknown while tracing (None) are not judged
        validation.check_loss_batches(tuple(text[0].shape)[0], tuple(pixels.shape)[0])
    return text, pixels


# ---------------------------------------------------------------------------------------------
# The encoder's layer loop and the output containers


def run_layers(
    layers: Sequence, hidden_states, call: Callable, output_attentions: bool, output_hidden_states: bool
):
    """(last hidden state, all hidden states or None, attention maps or None).

    ``call(layer, hidden_states)`` runs one layer and returns (hidden_states, attention map or None).
    """
    all_hidden = [hidden_states] if output_hidden_states else None
    all_attentions = [] if output_attentions else None
    for layer in layers:
        hidden_states, probs = call(layer, hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        if output_attentions:
            all_attentions.append(probs)
    return (
        hidden_states,
        tuple(all_hidden) if output_hidden_states else None,
        tuple(all_attentions) if output_attentions else None,
    )


def text_output(text, text_embeds) -> CLIPTextModelOutput:
    return CLIPTextModelOutput(text_embeds, text.last_hidden_state, text.hidden_states, text.attentions)


def vision_output(vision, image_embeds) -> CLIPVisionModelOutput:
    return CLIPVisionModelOutput(
        image_embeds, vision.last_hidden_state, vision.hidden_states, vision.attentions
    )


def clip_output(text, vision, text_embeds, image_embeds, logits_per_text, transpose, loss=None) -> CLIPOutput:
    """CLIPOutput from both towers' outputs, the normalised embeddings and the text x image logits."""
    return CLIPOutput(
        loss, transpose(logits_per_text), logits_per_text, text_embeds, image_embeds, text, vision
    )


# ---------------------------------------------------------------------------------------------
# Activations: transformers' names, each written once over the framework's primitives

GELU_FAST_COEFFICIENT = 0.7978845608  # transformers' "gelu_fast" rounds sqrt(2 / pi) to this


def activations(sigmoid, tanh, gelu_erf, gelu_tanh, relu) -> dict[str, Callable]:
    """``hidden_act`` name -> function, given the framework's elementwise functions."""

    def quick_gelu(x):
        return x * sigmoid(1.702 * x)

    def gelu_fast(x):
        return 0.5 * x * (1.0 + tanh(x * GELU_FAST_COEFFICIENT * (1.0 + 0.044715 * x * x)))

    return {
        "quick_gelu": quick_gelu,
        "gelu": gelu_erf,
        "gelu_new": gelu_tanh,
        "gelu_pytorch_tanh": gelu_tanh,
        "gelu_fast": gelu_fast,
        "relu": relu,
    }


def activation(table: dict[str, Callable], name: str) -> Callable:
    if name not in table:
        raise ValueError(f"hidden_act {name!r} is not supported; choose one of {sorted(table)}")
    return table[name]


# ---------------------------------------------------------------------------------------------
# Weight initialisation (transformers' PyTorch CLIPPreTrainedModel._init_weights)


def _tower_config(config, name: str):
    if isinstance(config, CLIPConfig):
        return config.text_config if name.startswith("text_") else config.vision_config
    return config


def init_rule(name: str, config) -> tuple[str, float]:
    """("normal", std), ("zeros", 0), ("ones", 1) or ("constant", value) for a canonical parameter.

    ``config`` is the model's config (a full CLIPConfig or a tower's config).
    """
    if name == "logit_scale":
        return "constant", float(config.logit_scale_init_value)
    factor = config.initializer_factor
    tower = _tower_config(config, name)
    width, depth = tower.hidden_size, tower.num_hidden_layers
    module, leaf = name.rsplit(".", 2)[-2:]
    if name.endswith("class_embedding"):
        return "normal", width**-0.5 * factor
    if leaf == "bias":
        return "zeros", 0.0
    if "layer_norm" in module or module in ("pre_layrnorm", "post_layernorm"):
        return "ones", 1.0
    if module in ("text_projection", "visual_projection"):
        return "normal", width**-0.5 * factor
    if module in ("token_embedding",) or (module == "position_embedding" and name.startswith("text_")):
        return "normal", 0.02 * factor
    if module in ("patch_embedding", "position_embedding"):
        return "normal", tower.initializer_range * factor
    if module in ("q_proj", "k_proj", "v_proj", "fc2"):
        return "normal", width**-0.5 * (2 * depth) ** -0.5 * factor
    if module == "out_proj":
        return "normal", width**-0.5 * factor
    if module == "fc1":
        return "normal", (2 * width) ** -0.5 * factor
    raise ValueError(f"no initialisation rule for {name}")
