"""Plots: read back as pixels. The overlay colours hot where the map is high and cold where it is low;
the heatmap figure holds both; the grid shows the thumbnails; the bar chart's bars grow with the
probabilities; the same inputs give the same bytes."""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from clip_core import plots  # noqa: E402
from clip_core.zeroshot import TopK  # noqa: E402


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def count_colour(picture, rgb, tol=12) -> int:
    return int((np.abs(picture - np.asarray(rgb)).max(axis=-1) <= tol).sum())


def test_overlay_is_hot_where_the_map_is_high():
    image = np.full((64, 64, 3), 128, np.uint8)
    grid = np.zeros((8, 8), np.float32)
    grid[1, 6] = 1.0  # one hot patch, top right
    out = plots.overlay(image, grid, alpha=0.6)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    hot, cold = out[12, 52].astype(int), out[52, 12].astype(int)  # centres of patch (1, 6) and (6, 1)
    assert hot[0] > hot[2] + 60  # red-ish (jet's top)
    assert cold[2] > cold[0] + 60  # blue-ish (jet's bottom)
    assert plots.overlay(image, grid, alpha=0.0).tolist() == image.tolist()


def test_heatmap_figure(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :, 1] = 200  # green
    low = np.zeros((8, 8))
    high = np.zeros((8, 8))
    high[3:5, 3:5] = 1.0
    path = plots.plot_heatmaps(
        image, [low, high], ["nothing", "a middle"], tmp_path / "h.png", scores=[0.1, 0.9]
    )
    picture = pixels(path)
    height, width, _ = picture.shape
    assert width > 2.5 * height  # three panels and a colour bar side by side
    not_white = (picture < 245).any(axis=-1).mean()
    assert not_white > 0.3
    assert count_colour(picture, (0, 200, 0), tol=10) > 2000  # the image panel itself
    reds = ((picture[..., 0] > 180) & (picture[..., 1] < 90) & (picture[..., 2] < 90)).sum()
    blues = ((picture[..., 2] > 150) & (picture[..., 0] < 60)).sum()
    assert reds > 100 and blues > 1000  # the hot centre of the second map, the cold first map
    again = plots.plot_heatmaps(
        image, [low, high], ["nothing", "a middle"], tmp_path / "h2.png", scores=[0.1, 0.9]
    )
    assert open(path, "rb").read() == open(again, "rb").read()  # deterministic


def test_similarity_grid_shows_thumbnails_and_scores(tmp_path):
    magenta = np.zeros((40, 40, 3), np.uint8)
    magenta[..., 0] = magenta[..., 2] = 255
    orange = np.zeros((40, 40, 3), np.uint8)
    orange[..., 0], orange[..., 1] = 255, 140
    sim = np.array([[0.3, 0.1, 0.2], [0.05, 0.25, 0.15]])
    path = plots.plot_similarity_grid([magenta, orange], ["one", "two", "three"], sim, tmp_path / "g.png")
    picture = pixels(path)
    assert count_colour(picture, (255, 0, 255)) > 1500 and count_colour(picture, (255, 140, 0)) > 1500
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 50  # colour map and text, not a blank page
    with pytest.raises(ValueError, match=r"similarity must be \(images, texts\)"):
        plots.plot_similarity_grid([magenta], ["one"], sim, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_topk_bars_grow_with_probabilities(tmp_path):
    image = np.full((32, 32, 3), 90, np.uint8)
    labels = [["cat", "dog", "bird"]]
    confident = TopK(np.array([[0, 1, 2]]), np.array([[0.9, 0.06, 0.04]]), labels)
    unsure = TopK(np.array([[0, 1, 2]]), np.array([[0.2, 0.15, 0.1]]), labels)
    bar = tuple(int(BAR[i : i + 2], 16) for i in (1, 3, 5))
    a = count_colour(pixels(plots.plot_topk([image], confident, tmp_path / "a.png")), bar, tol=3)
    b = count_colour(pixels(plots.plot_topk([image], unsure, tmp_path / "b.png")), bar, tol=3)
    assert a > 500 and b > 100
    assert a / b == pytest.approx(1.0 / 0.45, rel=0.15)  # bar area follows the probabilities shown


BAR = plots.BAR_COLOUR


def test_processed_image_undoes_normalisation():
    from clip_core.image_processing import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    values = processor(image, return_tensors="np")["pixel_values"][0]
    back = plots.processed_image(values, processor)
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 1


def test_missing_matplotlib_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'clip-multibackend\[plots\]'"):
        plots.plot_topk(
            [np.zeros((4, 4, 3), np.uint8)], TopK(np.zeros((1, 1), int), np.ones((1, 1)), [["a"]]), "x.png"
        )
