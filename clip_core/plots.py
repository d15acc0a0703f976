"""Pictures of what CLIP computes, saved as PNG (matplotlib: ``pip install 'clip-multibackend[plots]'``).

- ``plot_heatmaps(image, maps, texts, path)``: the image, then one panel per text with its
  similarity map stretched over the image (one colour scale for all panels, a colour bar, and
  each text's score in its title);
- ``plot_similarity_grid(images, texts, similarity, path)``: the images x texts cosine matrix with
  the images as thumbnails above their columns and every score written in its cell;
- ``plot_topk(images, top, path)``: each image beside a bar chart of its top-k zero-shot classes.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display
needed) and written atomically with no time stamp or version in the file, so the same inputs give
the same bytes. ``overlay(image, map)`` is the compositing behind the heatmaps, as an array.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from clip_core.files import atomic_path

HEATMAP_CMAP = "jet"
GRID_CMAP = "viridis"
BAR_COLOUR = "#1f6fb4"
DPI = 100


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'clip-multibackend[plots]'") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return matplotlib, Figure, FigureCanvasAgg


def _figure(width: float, height: float):
    _, Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | os.PathLike) -> str:
    """Write ``fig`` as a PNG at ``path`` atomically, with no metadata that changes between runs."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return path


def as_rgb(image) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, an (H, W[, C]) array (uint8 or floats in [0, 1]) or a path."""
    from PIL import Image

    from clip_core.encoding import open_image

    image = open_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3:
        raise ValueError(f"an image must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(np.round(np.asarray(array, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return array


def processed_image(pixel_values: np.ndarray, image_processor) -> np.ndarray:
    """What the model saw: one ``(3, H, W)`` pixel_values row, un-normalised back to (H, W, 3) uint8."""
    mean = np.asarray(image_processor.image_mean, np.float32)[:, None, None]
    std = np.asarray(image_processor.image_std, np.float32)[:, None, None]
    rgb = np.asarray(pixel_values, np.float32) * std + mean
    return np.clip(np.round(np.moveaxis(rgb, 0, -1) * 255.0), 0, 255).astype(np.uint8)


def overlay(
    image,
    map2d: np.ndarray,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = HEATMAP_CMAP,
) -> np.ndarray:
    """(H, W, 3) uint8: ``map2d`` stretched to the image (bilinear), coloured by ``cmap`` between
    vmin and vmax (the map's own range by default), blended over the image with weight ``alpha``."""
    from clip_core.explain import upsample

    matplotlib, _, _ = _matplotlib()
    rgb = as_rgb(image)
    values = upsample(np.nan_to_num(map2d), rgb.shape[:2])
    low = float(np.nanmin(map2d)) if vmin is None else vmin
    high = float(np.nanmax(map2d)) if vmax is None else vmax
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    colours = matplotlib.colormaps[cmap](scaled)[..., :3]
    blended = (1.0 - alpha) * rgb.astype(np.float64) / 255.0 + alpha * colours
    return np.clip(np.round(blended * 255.0), 0, 255).astype(np.uint8)


def _shorten(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_heatmaps(
    image,
    maps: Sequence[np.ndarray],
    texts: Sequence[str],
    path: str | os.PathLike,
    scores: Sequence[float] | None = None,
    alpha: float = 0.5,
    label: str = "patch-text cosine",
    title: str | None = None,
    scale: str = "shared",
    quote: bool = True,
) -> str:
    """The image and one overlay panel per map (titled by ``texts``, in quotes unless ``quote=False``).

    ``scale="shared"``: one colour scale for all panels, shown by the colour bar (compare values);
    ``"each"``: every map stretched between its own lowest and highest value (compare places, e.g.
    maps of different methods).
    """
    if scale not in ("shared", "each"):
        raise ValueError(f"scale must be 'shared' or 'each', got {scale!r}")
    maps = [np.asarray(m, np.float32) for m in maps]
    if len(maps) != len(texts) or not maps:
        raise ValueError(f"plot_heatmaps needs one map per text, got {len(maps)} maps and {len(texts)} texts")
    matplotlib, _, _ = _matplotlib()
    rgb = as_rgb(image)
    vmin = float(min(np.nanmin(m) for m in maps))
    vmax = float(max(np.nanmax(m) for m in maps))
    panels = len(maps) + 1
    fig = _figure(2.6 * panels + 0.6, 3.1 if title else 2.9)
    grid = fig.add_gridspec(1, panels + 1, width_ratios=[1] * panels + [0.06], wspace=0.08)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title("image", fontsize=10)
    ax.set_axis_off()
    for i, (m, text) in enumerate(zip(maps, texts)):
        ax = fig.add_subplot(grid[0, i + 1])
        low, high = (vmin, vmax) if scale == "shared" else (None, None)
        ax.imshow(overlay(rgb, m, alpha, low, high), interpolation="nearest")
        caption = f'"{_shorten(text)}"' if quote else _shorten(text)
        if scores is not None:
            caption += f"\nscore {float(scores[i]):.3f}"
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    bar_ax = fig.add_subplot(grid[0, panels])
    if scale == "shared":
        norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=HEATMAP_CMAP), cax=bar_ax, label=label)
    else:
        norm = matplotlib.colors.Normalize(vmin=0.0, vmax=1.0)
        bar = fig.colorbar(
            matplotlib.cm.ScalarMappable(norm=norm, cmap=HEATMAP_CMAP), cax=bar_ax, label=label
        )
        bar.set_ticks([0.0, 1.0], labels=["lowest", "highest"])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.03, top=0.8 if title else 0.85)
    return save(fig, path)


def plot_similarity_grid(
    images: Sequence,
    texts: Sequence[str],
    similarity: np.ndarray,
    path: str | os.PathLike,
    title: str = "cosine similarity of image and text embeddings",
) -> str:
    """``similarity`` (images, texts) as a texts x images matrix, thumbnails above the columns."""
    similarity = np.asarray(similarity, np.float32)
    if similarity.shape != (len(images), len(texts)):
        raise ValueError(
            f"similarity must be (images, texts) = ({len(images)}, {len(texts)}), got {similarity.shape}"
        )
    matrix = similarity.T  # rows: texts, columns: images
    n_img, n_txt = len(images), len(texts)
    cell, label_width, thumb, top = 0.95, 2.3, 0.95, 0.45  # inches
    width = label_width + cell * n_img + 0.25
    height = top + thumb + 0.1 + 0.6 * n_txt + 0.15
    fig = _figure(width, height)
    # one axes in data units: columns = images, rows = texts, thumbnails in the rows above row 0
    ax = fig.add_axes(
        (label_width / width, 0.15 / height, cell * n_img / width, (thumb + 0.1 + 0.6 * n_txt) / height)
    )
    low, high = float(matrix.min()), float(matrix.max())
    ax.imshow(
        matrix,
        cmap=GRID_CMAP,
        vmin=low,
        vmax=high,
        aspect="auto",
        extent=(-0.5, n_img - 0.5, n_txt - 0.5, -0.5),
    )
    middle = (low + high) / 2
    for t in range(n_txt):
        for i in range(n_img):
            value = matrix[t, i]
            ax.text(
                i,
                t,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="black" if value > middle else "white",
            )
    rows_per_inch = 1 / 0.6
    thumb_rows = thumb * rows_per_inch
    for i, image in enumerate(images):
        extent = (
            i - 0.46,
            i + 0.46,
            -0.5 - 0.1 * rows_per_inch,
            -0.5 - 0.1 * rows_per_inch - thumb_rows * 0.96,
        )
        ax.imshow(as_rgb(image), extent=extent, aspect="auto", interpolation="antialiased")
    ax.set_xlim(-0.5, n_img - 0.5)
    ax.set_ylim(n_txt - 0.5, -0.5 - (0.1 + thumb) * rows_per_inch)
    ax.set_yticks(range(n_txt), [_shorten(t, 36) for t in texts], fontsize=9)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    return save(fig, path)


def plot_topk(
    images: Sequence,
    top,
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
) -> str:
    """Each image beside a horizontal bar chart of its top-k classes (a clip_core.zeroshot.TopK, or
    any object with per-image ``labels`` and ``probs``); probabilities on a 0-1 axis."""
    labels, probs = list(top.labels), np.asarray(top.probs, np.float32)
    if len(labels) != len(images):
        raise ValueError(
            f"plot_topk needs one prediction per image, got {len(labels)} for {len(images)} images"
        )
    k = probs.shape[1]
    rows = len(images)
    fig = _figure(6.0, (0.3 * k + 0.75) * rows + 0.2)
    grid = fig.add_gridspec(rows, 2, width_ratios=[0.85, 2.1], hspace=0.45, wspace=0.6)
    for r, image in enumerate(images):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(as_rgb(image), interpolation="antialiased")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(_shorten(str(titles[r]), 24), fontsize=9)
        ax = fig.add_subplot(grid[r, 1])
        y = np.arange(k)
        ax.barh(y, probs[r], color=BAR_COLOUR, height=0.7)
        ax.set_yticks(y, [_shorten(name, 22) for name in labels[r]], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0.0, 1.0)
        ax.set_xticks([0, 0.5, 1.0])
        ax.tick_params(axis="x", labelsize=8)
        for yy, p in zip(y, probs[r]):
            inside = float(p) > 0.85  # no room on the right: write it inside the bar, in white
            x = float(p) - 0.02 if inside else float(p) + 0.02
            ax.text(
                x,
                yy,
                f"{float(p):.2f}",
                va="center",
                ha="right" if inside else "left",
                fontsize=8,
                color="white" if inside else "black",
            )
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.subplots_adjust(
        left=0.04, right=0.97, top=1 - 0.3 / fig.get_figheight(), bottom=0.35 / fig.get_figheight()
    )
    return save(fig, path)


__all__ = [
    "as_rgb",
    "overlay",
    "plot_heatmaps",
    "plot_similarity_grid",
    "plot_topk",
    "processed_image",
    "save",
]
