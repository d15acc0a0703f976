"""CLIP on TensorFlow with Keras 3 (``import keras`` on the TensorFlow backend, never tf.keras)."""

from clip_tf.modeling import (
    TFCLIPModel,
    TFCLIPTextModel,
    TFCLIPTextModelWithProjection,
    TFCLIPVisionModel,
    TFCLIPVisionModelWithProjection,
)

__all__ = [
    "TFCLIPModel",
    "TFCLIPTextModel",
    "TFCLIPTextModelWithProjection",
    "TFCLIPVisionModel",
    "TFCLIPVisionModelWithProjection",
]
