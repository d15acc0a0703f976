"""Zero-shot classification: a classifier made of text embeddings, from class names x prompt templates.

The CLIP paper's recipe (section 3.1.4, prompt ensembling): for each class, fill every template with
the class name, embed each prompt with the text tower and L2-normalise it, average the class's
normalised embeddings, and L2-normalise the average. The ``(classes, dim)`` result is the weight
matrix of a linear classifier over normalised image embeddings; ``logit_scale * image @ weights.T``
are its logits and their softmax the class probabilities.

Written once against the encoder protocol (clip_core.encoder), so it runs on every backend:

    >>> clf = ZeroShotClassifier.from_pretrained("path/to/clip", ["cat", "dog"], "generic", backend="flax")
    >>> top = clf.classify(["cat.jpg", "dog.png"], k=2)
    >>> top.labels[0], top.probs[0]        # (['cat', 'dog'], array([0.93, 0.07]))

Prompts are embedded in batches; texts longer than the model's context are truncated with
``<|endoftext|>`` kept last (open_clip's rule), so the text is pooled at its end.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from clip_core.encoder import l2_normalize
from clip_core.templates import fill, load_templates


def check_class_names(class_names: Sequence[str], where: str = "class names") -> list[str]:
    if isinstance(class_names, str):
        raise ValueError(f"{where}: expected a list of class names, got one string {class_names!r}")
    names = list(class_names)
    if not names:
        raise ValueError(f"{where}: no classes")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"{where}: class names must be non-empty strings, got {bad[0]!r}")
    seen, repeated = set(), []
    for n in names:
        if n in seen:
            repeated.append(n)
        seen.add(n)
    if repeated:
        raise ValueError(f"{where}: class {repeated[0]!r} is listed more than once")
    return names


def class_embeddings(
    encoder,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] | str | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """``(classes, dim)`` float32: per class, the normalised mean of its normalised prompt embeddings."""
    from clip_core.encoding import encode_texts

    names = check_class_names(class_names)
    templates = load_templates(templates)
    prompts = [fill(t, name) for name in names for t in templates]
    embeds = encode_texts(
        encoder, tokenizer, prompts, batch_size=batch_size, progress=progress, desc="prompts"
    )
    per_class = l2_normalize(embeds).reshape(len(names), len(templates), -1).mean(axis=1)
    return l2_normalize(per_class)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass
class TopK:
    """The k most probable classes of each image: ``indices`` and ``probs`` (N, k), best first, and
    ``labels`` their names. Equal probabilities keep class order."""

    indices: np.ndarray
    probs: np.ndarray
    labels: list[list[str]]

    def __len__(self) -> int:
        return len(self.labels)

    def top(self, i: int) -> list[tuple[str, float]]:
        """[(label, probability), ...] of image i."""
        return [(name, float(p)) for name, p in zip(self.labels[i], self.probs[i])]


class ZeroShotClassifier:
    """Class-name prompts embedded once; ``classify(images)`` gives each image's top-k classes.

    Args:
        encoder: any encoder of the protocol (``clip_core.encoder.load_encoder(model, backend)``).
        class_names: the classes, in the order of the classifier's outputs.
        templates: a template set's name (clip_core.templates), a file, or a list; default "generic".
        tokenizer: the model's tokenizer (CLIPTokenizerFast.from_pretrained(model)).
        image_processor: the model's CLIPImageProcessor, needed by ``classify`` (not by
            ``classify_embeddings``).

    Attributes: ``weights`` (classes, dim) float32, unit rows; ``class_names``; ``templates``.
    """

    def __init__(
        self,
        encoder,
        class_names: Sequence[str],
        templates: Sequence[str] | str | None = None,
        tokenizer=None,
        image_processor=None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> None:
        if tokenizer is None:
            raise ValueError(
                "ZeroShotClassifier needs the model's tokenizer: tokenizer=CLIPProcessor.from_pretrained(model).tokenizer"
            )
        self.encoder = encoder
        self.class_names = check_class_names(class_names)
        self.templates = load_templates(templates)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.weights = class_embeddings(
            encoder, tokenizer, self.class_names, self.templates, batch_size, progress
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        class_names: Sequence[str],
        templates: Sequence[str] | str | None = None,
        backend: str = "torch",
        dtype: str | None = None,
        **kwargs,
    ) -> ZeroShotClassifier:
        """Encoder, tokenizer and image processor from one checkpoint folder (or cached Hub id)."""
        from clip_core.encoder import load_encoder
        from clip_core.processing import CLIPProcessor

        processor = CLIPProcessor.from_pretrained(model)
        encoder = load_encoder(model, backend, dtype)
        return cls(encoder, class_names, templates, processor.tokenizer, processor.image_processor, **kwargs)

    def logits(self, image_embeds: np.ndarray) -> np.ndarray:
        """(N, classes): ``logit_scale * image_embeds @ weights.T`` (embeddings normalised first)."""
        return self.encoder.logit_scale * (l2_normalize(image_embeds) @ self.weights.T)

    def probabilities(self, image_embeds: np.ndarray) -> np.ndarray:
        return softmax(self.logits(image_embeds))

    def classify_embeddings(self, image_embeds: np.ndarray, k: int = 5) -> TopK:
        probs = self.probabilities(image_embeds)
        k = max(1, min(int(k), len(self.class_names)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(probs, order, axis=1)
        return TopK(order, top, [[self.class_names[j] for j in row] for row in order])

    def classify(self, images, k: int = 5, batch_size: int = 64, progress: bool = False) -> TopK:
        """Top-k classes of each image (file paths, PIL images or arrays), preprocessed in batches."""
        from clip_core.encoding import encode_images

        if self.image_processor is None:
            raise ValueError(
                "classify needs the model's image processor: image_processor=CLIPImageProcessor.from_pretrained(model)"
            )
        embeds = encode_images(
            self.encoder, self.image_processor, images, batch_size=batch_size, progress=progress
        )
        return self.classify_embeddings(embeds, k)


__all__ = ["TopK", "ZeroShotClassifier", "check_class_names", "class_embeddings", "softmax"]
