"""CLIP on Flax Linen: thin wrappers that hold ``params`` around Linen modules (``model.module``)."""

from clip_flax.modeling import (
    FlaxCLIPModel,
    FlaxCLIPModule,
    FlaxCLIPTextModel,
    FlaxCLIPTextModelWithProjection,
    FlaxCLIPVisionModel,
    FlaxCLIPVisionModelWithProjection,
    clip_loss,
    contrastive_loss,
)

__all__ = [
    "FlaxCLIPModel",
    "FlaxCLIPModule",
    "FlaxCLIPTextModel",
    "FlaxCLIPTextModelWithProjection",
    "FlaxCLIPVisionModel",
    "FlaxCLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
