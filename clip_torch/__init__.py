"""CLIP on PyTorch, with transformers' module names (state_dict keys are the canonical names)."""

from clip_torch.modeling import (
    CLIPModel,
    CLIPPreTrainedModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    clip_loss,
    contrastive_loss,
)

__all__ = [
    "CLIPModel",
    "CLIPPreTrainedModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
