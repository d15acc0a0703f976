"""Gradient-weighted attention relevance for CLIP (Chefer et al., ICCV 2021), PyTorch only.

"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers"
propagates relevance through the attention layers: starting from the identity, each layer adds
``mean_heads(clamp(grad * attention, min=0)) @ R`` to ``R``, where ``attention`` are the layer's
attention probabilities and ``grad`` the gradient of the model's score for the chosen image-text
pair with respect to them. The class-token row of the vision tower's ``R`` (patches only) is the
image relevance map; the end-of-text row of the text tower's ``R`` the relevance of each text token.

The score is the pair's logit, ``exp(logit_scale) * cos(image, text)``, as in the authors' CLIP
notebook. ``start_layer`` (default 0: every layer, as in the paper) skips the first layers; the
authors' CLIP notebook uses only the last one (``start_layer=-1``).

The attention probabilities come from the model's eager attention path (``output_attentions=True``
returns them, still part of the autograd graph) and ``torch.autograd.grad``: the model is not
modified. This needs gradients, so it has no TF / Flax twin here; the gradient-free maps of
clip_core.explain run on all three backends.
"""

from __future__ import annotations

import numpy as np
import torch

from clip_torch.modeling import CLIPModel


def _propagate(attentions, grads, start_layer: int) -> torch.Tensor:
    """R = I + sum over layers of mean_heads(clamp(grad * attn, 0)) @ R, layer by layer: (B, T, T)."""
    batch, _, tokens, _ = attentions[0].shape
    relevance = torch.eye(tokens, dtype=torch.float32).expand(batch, tokens, tokens).clone()
    start = start_layer % len(attentions)
    for attn, grad in list(zip(attentions, grads))[start:]:
        cam = (grad.float() * attn.detach().float()).clamp(min=0).mean(dim=1)  # (B, T, T)
        relevance = relevance + torch.bmm(cam, relevance)
    return relevance


def relevance_maps(
    model: CLIPModel,
    pixel_values,
    input_ids,
    attention_mask=None,
    start_layer: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of image b's patches and of text b's tokens for the pair (image b, text b).

    Returns (image relevance ``(B, grid_h, grid_w)``, text relevance ``(B, T)``), float32 numpy,
    non-negative, not normalised (the class token's and the end-of-text token's self-relevance are
    left out: patches only, and every text position including the end-of-text token).
    To explain one image against several texts, repeat the image.
    """
    pixels = torch.as_tensor(np.asarray(pixel_values, np.float32))
    ids = torch.as_tensor(np.asarray(input_ids, np.int64))
    mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask, np.int64))
    if pixels.shape[0] != ids.shape[0]:
        raise ValueError(
            f"relevance_maps pairs image b with text b: got {pixels.shape[0]} images and {ids.shape[0]} texts"
        )
    model = model.eval()
    with torch.enable_grad():
        vision = model.vision_model(pixels.to(model.dtype), output_attentions=True)
        text = model.text_model(ids, mask, output_attentions=True)
        image_embeds = model.visual_projection(vision.pooler_output).float()
        text_embeds = model.text_projection(text.pooler_output).float()
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        # Each pair's own logit; the rows do not interact, so one backward gives every pair's gradients.
        score = (model.logit_scale.exp().float() * (image_embeds * text_embeds).sum(dim=-1)).sum()
        attentions = [*vision.attentions, *text.attentions]
        grads = torch.autograd.grad(score, attentions)
    depth = len(vision.attentions)
    image_r = _propagate(vision.attentions, grads[:depth], start_layer)[:, 0, 1:]  # class row, patches
    text_r = _propagate(text.attentions, grads[depth:], start_layer)
    eos = model.text_model.pooling_positions(ids)
    text_r = text_r[torch.arange(len(ids)), eos]  # (B, T)
    vision_cfg = model.config.vision_config
    grid = (pixels.shape[-2] // vision_cfg.patch_size, pixels.shape[-1] // vision_cfg.patch_size)
    return image_r.reshape(-1, *grid).numpy(), text_r.numpy()


__all__ = ["relevance_maps"]
