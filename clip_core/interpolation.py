"""Bicubic resizing as a matrix, with PyTorch's convention, for ``interpolate_pos_encoding``.

transformers resizes the grid of patch position embeddings with
``F.interpolate(mode="bicubic", align_corners=False)``. TensorFlow's and JAX's bicubic resizes use
Keys' kernel with a = -0.5 and treat the borders differently, so they give other numbers. Bicubic
resizing is separable: resizing a [h, w] grid to [H, W] is ``Wh @ grid @ Ww.T`` with the [H, h] and
[W, w] matrices below, which every backend applies as one small einsum.
"""

from __future__ import annotations

import math

import numpy as np

# PyTorch's cubic convolution coefficient (OpenCV's too); Keys' paper and TF use -0.5.
TORCH_CUBIC_A = -0.75


def _cubic_near(t: np.ndarray, a: float) -> np.ndarray:
    # Kernel for |t| <= 1.
    return ((a + 2) * t - (a + 3)) * t * t + 1


def _cubic_far(t: np.ndarray, a: float) -> np.ndarray:
    # Kernel for 1 < |t| < 2.
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a


def bicubic_resize_matrix(in_size: int, out_size: int, a: float = TORCH_CUBIC_A) -> np.ndarray:
    """[out_size, in_size] float32 matrix M so that ``M @ x`` resizes x along its first axis.

    Matches ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`` with an output
    size given: source coordinate ``(i + 0.5) * in/out - 0.5``, four taps at floor(src) - 1 .. + 2,
    taps outside the input clamped to the border (their weights add up on the edge pixel).
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"bicubic resize needs positive sizes, got {in_size} -> {out_size}")
    # torch computes the scale and the source coordinate in float32 for float32 inputs.
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(src)
    t = (src - base).astype(np.float32)
    taps = (
        _cubic_far(t + 1, a),
        _cubic_near(t, a),
        _cubic_near(1 - t, a),
        _cubic_far(2 - t, a),
    )
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    for offset, weight in zip(range(-1, 3), taps):
        cols = np.clip(base.astype(np.int64) + offset, 0, in_size - 1)
        np.add.at(matrix, (rows, cols), weight.astype(np.float64))
    return matrix.astype(np.float32)


def position_resize_matrix(num_patches: int, grid_h: int, grid_w: int) -> np.ndarray:
    """[1 + grid_h * grid_w, 1 + num_patches] float32 matrix M: ``M @ positions`` resizes the trained
    square grid of patch position embeddings bicubically to grid_h x grid_w and keeps the class
    position (row and column 0) as it is. It is the identity when the grid already has that size.

    The separable resize ``rows @ grid @ cols.T`` is written as one Kronecker product (weights
    multiplied in float64, then rounded once), so every backend applies it as a single matmul.
    """
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"interpolate_pos_encoding needs a square patch grid, got {num_patches} patches")
    rows = bicubic_resize_matrix(side, grid_h).astype(np.float64)
    cols = bicubic_resize_matrix(side, grid_w).astype(np.float64)
    matrix = np.zeros((1 + grid_h * grid_w, 1 + num_patches))
    matrix[0, 0] = 1.0
    matrix[1:, 1:] = np.kron(rows, cols)
    return matrix.astype(np.float32)
