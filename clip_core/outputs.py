"""Output containers shared by the three backends, with transformers' field names.

Each is a dataclass that also behaves like transformers' ``ModelOutput``: fields by attribute or by
key, ``keys()`` lists the fields that are set (not None), integer indexing and ``to_tuple()`` follow
that order, and ``**output`` unpacks it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class ModelOutput:
    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    # tf.nest's custom-structure protocol (TensorFlow >= 2.13), so that tf.function and XLA can
    # return these containers. Plain Python: no TensorFlow import here.
    def __tf_flatten__(self) -> tuple[tuple, tuple]:
        return (), tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @classmethod
    def __tf_unflatten__(cls, metadata: tuple, components: tuple):
        return cls(*components)


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class CLIPTextModelOutput(ModelOutput):
    text_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class CLIPVisionModelOutput(ModelOutput):
    image_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class CLIPOutput(ModelOutput):
    loss: Any = None
    logits_per_image: Any = None
    logits_per_text: Any = None
    text_embeds: Any = None
    image_embeds: Any = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
