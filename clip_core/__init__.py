"""The framework-free half of the library: configs, tokenizers, image processor, checkpoint files.

The public classes import on first use, so ``import clip_core.weights`` stays light.
"""

_EXPORTS = {
    "CLIPConfig": "clip_core.config",
    "CLIPTextConfig": "clip_core.config",
    "CLIPVisionConfig": "clip_core.config",
    "CLIPTokenizer": "clip_core.tokenization",
    "CLIPTokenizerFast": "clip_core.tokenization_fast",
    "CLIPImageProcessor": "clip_core.image_processing",
    "CLIPFeatureExtractor": "clip_core.image_processing",
    "CLIPProcessor": "clip_core.processing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clip_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
