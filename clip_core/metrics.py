"""Retrieval and zero-shot classification metrics on embeddings (numpy only).

Retrieval (``retrieval_metrics``) takes image embeddings ``(N_images, D)``, text embeddings
``(N_texts, D)`` and, for every text, the index of its image: an image may have several captions
(COCO has five), a caption has exactly one image. Scores are dot products (cosine similarity for
the L2-normalised embeddings every encoder returns). The keys are CLIP_benchmark's:

- ``image_retrieval_recall@k``: text -> image. The fraction of texts whose image is among the k
  images scored highest for that text.
- ``text_retrieval_recall@k``: image -> text. The fraction of images with at least one of their
  captions among the k texts scored highest for that image (the CLIP papers' definition; images
  with no caption are left out of this direction).
- ``image_retrieval_mrr`` / ``text_retrieval_mrr``: the mean of 1 / rank of the first correct item;
  ``image_retrieval_mean_rank`` / ``text_retrieval_mean_rank``: the mean of that rank (1 = first);
  ``image_retrieval_median_rank`` / ``text_retrieval_median_rank``.
- ``mrr``: the image-retrieval MRR (text -> image, the usual "image retrieval with MRR").

Ties are broken against the query, deterministically: an incorrect item scored exactly as high as
the best correct one ranks ahead of it. (Index order would reward whatever happens to come first;
a model that scores everything alike gets the worst rank, not a lucky one.) So the rank of a
text's image is the number of images scored at least as high as it, and an image's rank is one
plus the number of other images' captions scored at least as high as its best caption.

Zero-shot classification (``zeroshot_metrics``) gives CLIP_benchmark's ``acc1``, ``acc5`` and
``mean_per_class_recall`` (the mean over the classes present in the labels of the fraction of
their images classified right) from ``(N, classes)`` scores, with the same tie rule.

All computed in chunks of queries, so a COCO-sized evaluation (25,000 x 5,000) needs no full
score matrix in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK = 1024


def _as_embeddings(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"recall k values must be positive integers, got {ks}")
    return ks


def text_to_image_ranks(image_embeds, text_embeds, text_to_image) -> np.ndarray:
    """(N_texts,) rank (1 = best) of each text's own image among all images, ties against the text."""
    images = _as_embeddings(image_embeds, "image_embeds")
    texts = _as_embeddings(text_embeds, "text_embeds")
    targets = _targets(text_to_image, len(texts), len(images))
    ranks = np.empty(len(texts), np.int64)
    for start in range(0, len(texts), CHUNK):
        scores = texts[start : start + CHUNK] @ images.T  # (chunk, N_images)
        own = scores[np.arange(len(scores)), targets[start : start + CHUNK]]
        ranks[start : start + CHUNK] = (scores >= own[:, None]).sum(axis=1)  # counts the own image too
    return ranks


def image_to_text_ranks(image_embeds, text_embeds, text_to_image) -> np.ndarray:
    """(N_images,) rank of each image's best-scored caption among all texts (0 for an image with no
    caption), ties against the image: 1 + the other images' captions scored at least as high."""
    images = _as_embeddings(image_embeds, "image_embeds")
    texts = _as_embeddings(text_embeds, "text_embeds")
    targets = _targets(text_to_image, len(texts), len(images))
    ranks = np.zeros(len(images), np.int64)
    for start in range(0, len(images), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(images)))
        scores = images[rows] @ texts.T  # (chunk, N_texts)
        positive = targets[None, :] == rows[:, None]
        best = np.where(positive, scores, -np.inf).max(axis=1)
        beaten = (~positive) & (scores >= best[:, None])
        ranks[rows] = np.where(positive.any(axis=1), 1 + beaten.sum(axis=1), 0)
    return ranks


def _targets(text_to_image, num_texts: int, num_images: int) -> np.ndarray:
    targets = np.asarray(text_to_image)
    if targets.shape != (num_texts,):
        raise ValueError(
            f"text_to_image must give one image index per text ({num_texts}), got shape {targets.shape}"
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"text_to_image must hold integer image indices, got {targets.dtype}")
    if num_texts and (targets.min() < 0 or targets.max() >= num_images):
        raise ValueError(
            f"text_to_image indices must lie in [0, {num_images - 1}], got {targets.min()}..{targets.max()}"
        )
    return targets.astype(np.int64)


def _rank_summary(prefix: str, ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = {f"{prefix}_recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_mrr"] = float(np.mean(1.0 / ranks))
    out[f"{prefix}_mean_rank"] = float(np.mean(ranks))
    out[f"{prefix}_median_rank"] = float(np.median(ranks))
    return out


def retrieval_metrics(
    image_embeds, text_embeds, text_to_image, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """CLIP_benchmark's retrieval keys (fractions in [0, 1]) plus MRR and mean / median ranks.

    ``text_to_image[t]`` is the index (into ``image_embeds``) of text t's image.
    """
    ks = _check_ks(ks)
    t2i = text_to_image_ranks(image_embeds, text_embeds, text_to_image)
    i2t = image_to_text_ranks(image_embeds, text_embeds, text_to_image)
    if len(t2i) == 0:
        raise ValueError("no texts to evaluate")
    i2t = i2t[i2t > 0]  # images without captions cannot be retrieved from
    metrics = {}
    for k in ks:  # CLIP_benchmark's order: both directions per k
        metrics[f"image_retrieval_recall@{k}"] = float(np.mean(t2i <= k))
        metrics[f"text_retrieval_recall@{k}"] = float(np.mean(i2t <= k))
    metrics.update(_rank_summary("image_retrieval", t2i, ks))
    metrics.update(_rank_summary("text_retrieval", i2t, ks))
    metrics["mrr"] = metrics["image_retrieval_mrr"]
    return metrics


def class_ranks(scores, labels) -> np.ndarray:
    """(N,) rank of each example's true class among its ``(N, classes)`` scores, ties against it."""
    scores = _as_embeddings(scores, "scores")
    labels = np.asarray(labels)
    if labels.shape != (len(scores),):
        raise ValueError(
            f"labels must give one class per row of scores ({len(scores)}), got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1] - 1}]")
    own = scores[np.arange(len(scores)), labels]
    return (scores >= own[:, None]).sum(axis=1)


def zeroshot_metrics(scores, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``acc{k}`` for each k and ``mean_per_class_recall`` (CLIP_benchmark's keys), fractions in [0, 1]."""
    ks = _check_ks(ks)
    ranks = class_ranks(scores, labels)
    if len(ranks) == 0:
        raise ValueError("no examples to evaluate")
    labels = np.asarray(labels)
    metrics = {f"acc{k}": float(np.mean(ranks <= k)) for k in ks}
    present = np.unique(labels)
    metrics["mean_per_class_recall"] = float(np.mean([np.mean(ranks[labels == c] == 1) for c in present]))
    return metrics


__all__ = [
    "class_ranks",
    "image_to_text_ranks",
    "retrieval_metrics",
    "text_to_image_ranks",
    "zeroshot_metrics",
]
