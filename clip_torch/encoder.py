"""The encoder protocol (clip_core.encoder) on PyTorch: numpy in, normalised float32 embeddings out."""

from __future__ import annotations

import os

import numpy as np
import torch

from clip_core.encoder import dtype_name, l2_normalize
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
