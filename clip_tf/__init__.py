"""CLIP on TensorFlow with Keras 3 (``import keras`` on the TensorFlow backend, never tf.keras)."""

import os

# Checked before Keras is imported: Keras reads KERAS_BACKEND once, at its import.
_KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "")
if _KERAS_BACKEND not in ("", "tensorflow"):
    raise ImportError(
        f"clip_tf runs on Keras 3 with the TensorFlow backend, but KERAS_BACKEND={_KERAS_BACKEND!r}; "
        "unset it or set KERAS_BACKEND=tensorflow before importing keras (use clip_flax or clip_torch "
        "for the other frameworks)"
    )

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":  # e.g. "backend" set in ~/.keras/keras.json
    raise ImportError(
        f"clip_tf needs Keras 3 on the TensorFlow backend, but keras runs on {keras.backend.backend()!r}; "
        "set KERAS_BACKEND=tensorflow"
    )

from clip_tf.modeling import (  # noqa: E402
    TFCLIPModel,
    TFCLIPPreTrainedModel,
    TFCLIPTextModel,
    TFCLIPTextModelWithProjection,
    TFCLIPVisionModel,
    TFCLIPVisionModelWithProjection,
    clip_loss,
    contrastive_loss,
)

__all__ = [
    "TFCLIPModel",
    "TFCLIPPreTrainedModel",
    "TFCLIPTextModel",
    "TFCLIPTextModelWithProjection",
    "TFCLIPVisionModel",
    "TFCLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
