"""The encoder protocol (clip_core.encoder) on PyTorch: numpy in, normalised float32 embeddings out."""

from __future__ import annotations

import os

import numpy as np
import torch

from clip_core.encoder import check_patch_path, checked_pixels, checked_tokens, dtype_name, l2_normalize
from clip_torch import fast
from clip_torch.modeling import CLIPModel


class TorchEncoder:
    """A CLIPModel run under ``torch.inference_mode`` in ``dtype`` (its parameters are cast once).

    In float32 on CPU its Linear layers run through oneDNN rather than MKL (clip_torch.fast: the same
    weights, 1.5-2.5x faster on AMD CPUs); ``onednn=False`` keeps torch's default.

    Example:
        >>> encoder = TorchEncoder.from_pretrained("path/to/clip")
        >>> image_embeds = encoder.encode_images(processor(images=images)["pixel_values"])
    """

    def __init__(self, model: CLIPModel, dtype=None, onednn: bool = True):
        self.dtype = model.dtype if dtype is None else getattr(torch, dtype_name(dtype))
        self.model = model.to(self.dtype).eval()
        self.config = model.config
        on_cpu = next(model.parameters()).device.type == "cpu"
        if onednn and on_cpu and self.dtype == torch.float32 and fast.available():
            self._run = fast.onednn_linears(self.model)
        else:
            self._run = self.model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None) -> TorchEncoder:
        return cls(CLIPModel.from_pretrained(path, dtype=getattr(torch, dtype_name(dtype))), dtype)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())

    @torch.inference_mode()
    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(np.ascontiguousarray(pixel_values, np.float32)).to(self.dtype)
        return l2_normalize(self._run.get_image_features(pixel_values=pixels).float().numpy())

    @torch.inference_mode()
    def encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        ids = torch.from_numpy(np.asarray(input_ids, np.int64))
        mask = None if attention_mask is None else torch.from_numpy(np.asarray(attention_mask, np.int64))
        return l2_normalize(self._run.get_text_features(input_ids=ids, attention_mask=mask).float().numpy())

    @torch.inference_mode()
    def encode_image_patches(self, pixel_values: np.ndarray, path: str = "values") -> np.ndarray:
        """(B, grid_h * grid_w, projection_dim), unit rows: the last layer's patch ``"tokens"`` or its
        value path (``"values"``, MaskCLIP), through post_layernorm and the projection (clip_core.encoder)."""
        pixels = torch.from_numpy(checked_pixels(self.config, pixel_values)).to(self.dtype)
        vision = self.model.vision_model
        if check_patch_path(path) == "tokens":
            states = vision(pixels).last_hidden_state
        else:
            last = vision.encoder.layers[-1]
            x = vision(pixels, output_hidden_states=True).hidden_states[-2]  # the last layer's input
            states = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
        patches = vision.post_layernorm(states[:, 1:])  # class token dropped
        return l2_normalize(self.model.visual_projection(patches).float().numpy())

    @torch.inference_mode()
    def encode_text_tokens(
        self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, T, projection_dim): every token's final_layer_norm state through text_projection."""
        ids, mask = (
            torch.from_numpy(x.astype(np.int64))
            for x in checked_tokens(self.config, input_ids, attention_mask)
        )
        states = self.model.text_model(ids, mask).last_hidden_state  # after final_layer_norm
        return l2_normalize(self.model.text_projection(states).float().numpy())

    def relevance_maps(
        self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chefer et al. relevance of (image b, text b): clip_torch.explain.relevance_maps (PyTorch only)."""
        from clip_torch.explain import relevance_maps

        return relevance_maps(self.model, pixel_values, input_ids, attention_mask)
