"""CLIP configurations that read and write Hugging Face's ``config.json`` field for field.

Plain dataclasses: the known fields carry transformers' names and defaults (ViT-B/32); any other
key found in a config.json is kept in ``extra`` and written back, so nothing is lost in a round trip.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from clip_core.files import atomic_write_text, read_json, resolve_file

CONFIG_NAME = "config.json"
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")
MAX_CONFIG_BYTES = 4 * 2**20
# Sanity limits: far above any CLIP (ViT-bigG: 48 layers, width 1664, MLP 8192; the largest
# vocabularies ~250k), far below sizes that would hang or exhaust memory building the model.
LIMITS = {
    "num_hidden_layers": 1024,
    "hidden_size": 65536,
    "intermediate_size": 262144,
    "num_attention_heads": 4096,
    "projection_dim": 65536,
    "vocab_size": 4_194_304,
    "max_position_embeddings": 65536,
    "num_channels": 64,
    "image_size": 16384,
    "patch_size": 16384,
}
MAX_PATCHES = 65536  # (image_size / patch_size) ** 2: ViT-H/14 at 518 px has 1369


class ConfigError(ValueError):
    """A config that cannot describe a CLIP model."""


def _check_positive(owner: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{owner}.{name} must be a positive integer, got {value!r}")
        if value > LIMITS.get(name, value):
            raise ConfigError(
                f"{owner}.{name} is {value:,}, above the sanity limit {LIMITS[name]:,} "
                "(clip_core.config.LIMITS): not a CLIP model this library can build"
            )


def _check_number(
    owner: str, name: str, value: Any, low: float, high: float = math.inf, open_low=False
) -> None:
    """A finite real number in [low, high] ((low, high] with open_low)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ConfigError(f"{owner}.{name} must be a finite number in {interval}, got {value!r}")


def _check_common(owner: str, cfg: Any) -> None:
    _check_positive(
        owner,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        projection_dim=cfg.projection_dim,
    )
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(
            f"{owner}.hidden_size ({cfg.hidden_size}) must be divisible by "
            f"num_attention_heads ({cfg.num_attention_heads})"
        )
    if not isinstance(cfg.hidden_act, str) or cfg.hidden_act not in ACTIVATIONS:
        raise ConfigError(f"{owner}.hidden_act {cfg.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
    _check_number(owner, "layer_norm_eps", cfg.layer_norm_eps, 0, 1, open_low=True)
    _check_number(owner, "attention_dropout", cfg.attention_dropout, 0, 1)
    _check_number(owner, "initializer_range", cfg.initializer_range, 0)
    _check_number(owner, "initializer_factor", cfg.initializer_factor, 0)


class _ConfigBase:
    """Shared dict/JSON plumbing of the three config classes."""

    model_type: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def _known_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for name in self._known_fields():
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, _ConfigBase) else value
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any):
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = cls._prepare({**data, **overrides})
        known = set(cls._known_fields())
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "model_type"}
        return cls(**kwargs, extra=extra)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        if os.path.isfile(save_directory):
            raise ConfigError(f"save_pretrained expects a folder, got the file {save_directory}")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        """Read a config.json; every problem is a ConfigError naming the file (and the field)."""
        try:
            data = read_json(path, MAX_CONFIG_BYTES)
        except ValueError as e:
            raise ConfigError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        try:
            return cls._from_config_json(data, str(path))
        except ConfigError as e:
            raise ConfigError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{path}: not a valid {cls.__name__} ({type(e).__name__}: {e})") from None

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike, **overrides: Any):
        """Read a config from a folder, a config.json file, or a Hub model id (through its local cache)."""
        path = resolve_file(pretrained, CONFIG_NAME)
        cfg = cls.from_json_file(path)
        return dataclasses.replace(cfg, **overrides) if overrides else cfg

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()


def _sub_config_from(cls, data: dict[str, Any], key: str, source: str):
    """A tower's config from either its own config.json or a full CLIP config.json."""
    model_type = data.get("model_type")
    if model_type == cls.model_type:
        return cls.from_dict(data)
    if model_type == "clip" or key in data or f"{key}_dict" in data:
        full = CLIPConfig._from_config_json(data, source)
        # The projections stored in a full CLIP checkpoint have the top-level projection_dim; the
        # tower's own field is unused by CLIPModel and often left at its default (512). Taking it
        # would make a WithProjection model that cannot load those weights (transformers does).
        return dataclasses.replace(getattr(full, key), projection_dim=full.projection_dim)
    raise ConfigError(f"{source} is not a CLIP config (model_type={model_type!r})")


@dataclass(eq=False)
class CLIPTextConfig(_ConfigBase):
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    model_type = "clip_text_model"

    def validate(self) -> None:
        _check_common("CLIPTextConfig", self)
        _check_positive(
            "CLIPTextConfig", vocab_size=self.vocab_size, max_position_embeddings=self.max_position_embeddings
        )
        eos = self.eos_token_id
        if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int)):
            raise ConfigError(f"CLIPTextConfig.eos_token_id must be an integer or null, got {eos!r}")
        if eos is not None and eos != 2 and not 0 <= eos < self.vocab_size:
            # pooling looks for eos_token_id in input_ids, which are < vocab_size: it would never find it
            raise ConfigError(
                f"CLIPTextConfig.eos_token_id {eos} is outside the vocabulary (vocab_size {self.vocab_size}): "
                "no input could contain it, so the text tower would pool at the wrong position"
            )

    @property
    def uses_legacy_eos_pooling(self) -> bool:
        """Configs written before transformers' fix say eos_token_id == 2 and pool at argmax(input_ids)."""
        return self.eos_token_id == 2

    @classmethod
    def _from_config_json(cls, data: dict[str, Any], source: str):
        return _sub_config_from(cls, data, "text_config", source)


@dataclass(eq=False)
class CLIPVisionConfig(_ConfigBase):
    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    model_type = "clip_vision_model"

    def validate(self) -> None:
        _check_common("CLIPVisionConfig", self)
        _check_positive(
            "CLIPVisionConfig",
            num_channels=self.num_channels,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"CLIPVisionConfig.image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.num_patches > MAX_PATCHES:
            raise ConfigError(
                f"CLIPVisionConfig.image_size {self.image_size} / patch_size {self.patch_size} makes "
                f"{self.num_patches:,} patches, above the sanity limit {MAX_PATCHES:,}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def _from_config_json(cls, data: dict[str, Any], source: str):
        return _sub_config_from(cls, data, "vision_config", source)


@dataclass(eq=False)
class CLIPConfig(_ConfigBase):
    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    model_type = "clip"

    def __post_init__(self) -> None:
        if isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig.from_dict(self.text_config)
        if isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig.from_dict(self.vision_config)
        super().__post_init__()

    def validate(self) -> None:
        _check_positive("CLIPConfig", projection_dim=self.projection_dim)
        _check_number("CLIPConfig", "logit_scale_init_value", self.logit_scale_init_value, -math.inf)
        _check_number("CLIPConfig", "initializer_factor", self.initializer_factor, 0)
        if not isinstance(self.text_config, CLIPTextConfig) or not isinstance(
            self.vision_config, CLIPVisionConfig
        ):
            raise ConfigError(
                "CLIPConfig needs a CLIPTextConfig and a CLIPVisionConfig (or dicts of their fields)"
            )

    @classmethod
    def from_text_vision_configs(
        cls, text_config: CLIPTextConfig, vision_config: CLIPVisionConfig, **kwargs: Any
    ):
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        # Configs written by early transformers releases nest the towers under *_config_dict;
        # like transformers, those values win over *_config ones.
        for key in ("text_config", "vision_config"):
            legacy = data.pop(f"{key}_dict", None)
            if legacy is not None:
                data[key] = {**(data.get(key) or {}), **legacy}
        text = data.pop("text_config", None) or {}
        vision = data.pop("vision_config", None) or {}
        if not isinstance(text, (dict, CLIPTextConfig)) or not isinstance(vision, (dict, CLIPVisionConfig)):
            raise ConfigError("CLIPConfig text_config and vision_config must be JSON objects")
        return {**data, "text_config": text, "vision_config": vision}

    @classmethod
    def _from_config_json(cls, data: dict[str, Any], source: str):
        model_type = data.get("model_type")
        if model_type not in (None, "clip") or not any(
            k in data for k in ("text_config", "vision_config", "text_config_dict", "vision_config_dict")
        ):
            raise ConfigError(f"{source} is not a CLIP config (model_type={model_type!r})")
        return cls.from_dict(data)
