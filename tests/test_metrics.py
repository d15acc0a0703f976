"""Retrieval and zero-shot metrics against straightforward loop implementations (multi-caption images,
ties), against CLIP_benchmark's formula where there are no ties, and by hand on a tiny case; the
clip-embed folder reader; clip-eval retrieval end to end."""

import json
import os

import numpy as np
import pytest

from clip_core import evaluation
from clip_core.cli import eval_main
from clip_core.metrics import (
    class_ranks,
    image_to_text_ranks,
    retrieval_metrics,
    text_to_image_ranks,
    zeroshot_metrics,
)

# ---------------------------------------------------------------------------------------------
# Independent implementations: plain loops over the definitions in clip_core.metrics' docstring.


def loop_retrieval(images, texts, owner, ks):
    scores = [[float(np.dot(t, im)) for im in images] for t in texts]  # (texts, images)
    t2i = []
    for t, row in enumerate(scores):
        own = row[owner[t]]
        t2i.append(sum(1 for s in row if s >= own))  # the own image counts itself
    i2t = []
    for i in range(len(images)):
        mine = [t for t in range(len(texts)) if owner[t] == i]
        if not mine:
            continue
        best = max(scores[t][i] for t in mine)
        i2t.append(1 + sum(1 for t in range(len(texts)) if owner[t] != i and scores[t][i] >= best))
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = sum(r <= k for r in t2i) / len(t2i)
        out[f"text_retrieval_recall@{k}"] = sum(r <= k for r in i2t) / len(i2t)
    for name, ranks in (("image_retrieval", t2i), ("text_retrieval", i2t)):
        out[f"{name}_mrr"] = sum(1.0 / r for r in ranks) / len(ranks)
        out[f"{name}_mean_rank"] = sum(ranks) / len(ranks)
        out[f"{name}_median_rank"] = float(np.median(ranks))
    out["mrr"] = out["image_retrieval_mrr"]
    return out, t2i, i2t


def loop_zeroshot(scores, labels, ks):
    ranks = [sum(1 for s in row if s >= row[y]) for row, y in zip(scores.tolist(), labels.tolist())]
    out = {f"acc{k}": sum(r <= k for r in ranks) / len(ranks) for k in ks}
    per_class = []
    for c in sorted(set(labels.tolist())):
        members = [r for r, y in zip(ranks, labels.tolist()) if y == c]
        per_class.append(sum(r == 1 for r in members) / len(members))
    out["mean_per_class_recall"] = sum(per_class) / len(per_class)
    return out


def tied_embeddings(rng, rows, dim=4):
    """Small integer vectors: dot products tie often."""
    return rng.integers(-1, 2, size=(rows, dim)).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_equals_loops_with_multi_caption_images_and_ties(seed):
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(3, 12))
    images = tied_embeddings(rng, n_images)
    images[-1] = images[0]  # two identical images
    counts = rng.integers(0, 4, n_images)  # 0 to 3 captions per image (an image without captions too)
    counts[0] = max(counts[0], 2)
    owner = np.repeat(np.arange(n_images), counts)
    texts = tied_embeddings(rng, len(owner))
    texts[1] = texts[0]  # two identical captions of one image
    ks = (1, 2, 5)
    expected, t2i, i2t = loop_retrieval(images, texts, owner, ks)
    got = retrieval_metrics(images, texts, owner, ks)
    assert list(got) == list(expected) or set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    np.testing.assert_array_equal(text_to_image_ranks(images, texts, owner), t2i)
    ranks = image_to_text_ranks(images, texts, owner)
    np.testing.assert_array_equal(ranks[counts > 0], i2t)
    assert (ranks[counts == 0] == 0).all()


def clip_benchmark_recall(scores, positive, k):
    """CLIP_benchmark's recall_at_k (top-k one-hot against the positive pairs), then '> 0' per query."""
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(positive, topk, axis=1).sum(axis=1)
    return float(np.mean(hits > 0))


def test_keys_and_values_match_clip_benchmark_without_ties():
    rng = np.random.default_rng(7)
    images = rng.standard_normal((30, 8)).astype(np.float32)
    owner = np.repeat(np.arange(30), 5)  # COCO-like: five captions per image
    texts = (images[owner] + 1.5 * rng.standard_normal((150, 8))).astype(np.float32)
    got = retrieval_metrics(images, texts, owner, ks=(1, 5, 10))
    scores = texts @ images.T
    positive = np.zeros_like(scores, bool)
    positive[np.arange(len(owner)), owner] = True
    for k in (1, 5, 10):
        assert got[f"image_retrieval_recall@{k}"] == pytest.approx(clip_benchmark_recall(scores, positive, k))
        assert got[f"text_retrieval_recall@{k}"] == pytest.approx(
            clip_benchmark_recall(scores.T, positive.T, k)
        )
    assert 0.0 < got["image_retrieval_recall@1"] < got["image_retrieval_recall@5"] < 1.0


def test_by_hand():
    # 2 images (unit x, unit y); captions: t0, t1 of image 0, t2 of image 1.
    images = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    texts = np.array([[0.6, 0.8], [0.9, 0.1], [0.5, 0.5]], np.float32)
    owner = np.array([0, 0, 1])
    m = retrieval_metrics(images, texts, owner, ks=(1,))
    # text -> image: t0 scores (0.6, 0.8): its image 0 is 2nd; t1 (0.9, 0.1): 1st; t2 (0.5, 0.5): a tie,
    # counted against the text: 2nd. Ranks 2, 1, 2.
    assert m["image_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["image_retrieval_mrr"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["image_retrieval_mean_rank"] == pytest.approx(5 / 3)
    # image -> text: image 0 scores (0.6, 0.9, 0.5): its best caption t1 is 1st. Image 1 scores
    # (0.8, 0.1, 0.5): t0 (not its caption) beats t2: 2nd.
    assert m["text_retrieval_recall@1"] == pytest.approx(0.5)
    assert m["text_retrieval_mrr"] == pytest.approx(0.75)
    assert m["mrr"] == m["image_retrieval_mrr"]


def test_all_equal_scores_get_the_worst_rank():
    images = np.ones((4, 3), np.float32)
    texts = np.ones((4, 3), np.float32)
    m = retrieval_metrics(images, texts, np.arange(4), ks=(1, 4))
    assert m["image_retrieval_recall@1"] == 0.0 and m["image_retrieval_recall@4"] == 1.0
    assert m["image_retrieval_mean_rank"] == 4.0 and m["text_retrieval_mean_rank"] == 4.0


@pytest.mark.parametrize("seed", range(4))
def test_zeroshot_metrics_equal_loops_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(40, 6)).astype(np.float32)
    labels = rng.integers(0, 5, 40)  # class 5 never occurs
    expected = loop_zeroshot(scores, labels, (1, 3))
    got = zeroshot_metrics(scores, labels, ks=(1, 3))
    assert got == pytest.approx(expected)
    np.testing.assert_array_equal(
        class_ranks(scores, labels), [sum(row >= row[y]) for row, y in zip(scores, labels)]
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: retrieval_metrics(np.ones((2, 3)), np.ones((2, 3)), [0, 2]), r"must lie in \[0, 1\]"),
        (lambda: retrieval_metrics(np.ones((2, 3)), np.ones((2, 3)), [0]), "one image index per text"),
        (lambda: retrieval_metrics(np.ones((2, 3)), np.ones((2, 3)), [0.0, 1.0]), "integer"),
        (lambda: retrieval_metrics(np.ones(3), np.ones((2, 3)), [0, 0]), "2-D"),
        (lambda: retrieval_metrics(np.full((2, 3), np.nan), np.ones((2, 3)), [0, 1]), "NaN"),
        (lambda: retrieval_metrics(np.ones((2, 3)), np.ones((2, 3)), [0, 1], ks=(0,)), "positive"),
        (lambda: zeroshot_metrics(np.ones((2, 3)), [0, 3]), r"\[0, 2\]"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# clip-embed folders and clip-eval retrieval


def write_embedding_folder(root, images, texts, keys=None, parts=2):
    for kind, array in (("img_emb", images), ("text_emb", texts)):
        os.makedirs(root / kind, exist_ok=True)
        for n, chunk in enumerate(np.array_split(array, parts)):
            np.save(root / kind / f"{kind}_{n}.npy", chunk)
    if keys is not None:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        os.makedirs(root / "metadata", exist_ok=True)
        for n, chunk in enumerate(np.array_split(np.arange(len(keys)), parts)):
            table = pa.table({"image_path": [keys[i] for i in chunk], "caption": [f"c{i}" for i in chunk]})
            pq.write_table(table, root / "metadata" / f"metadata_{n}.parquet")


def test_embedding_folder_without_metadata_pairs_rows(tmp_path):
    rng = np.random.default_rng(0)
    images, texts = rng.standard_normal((12, 4)), rng.standard_normal((12, 4))
    write_embedding_folder(tmp_path, images, texts, parts=3)
    folder = evaluation.read_embedding_folder(str(tmp_path))
    np.testing.assert_allclose(folder.image_embeds, images.astype(np.float32))
    assert folder.metadata is None and folder.image_keys() is None
    result, _ = evaluation.retrieval_job("m", embeddings=str(tmp_path), ks=(1, 5))
    assert result["metrics"] == pytest.approx(retrieval_metrics(images, texts, np.arange(12), ks=(1, 5)))


def test_embedding_folder_groups_captions_of_one_image(tmp_path):
    rng = np.random.default_rng(1)
    keys = ["a.jpg", "a.jpg", "b.jpg", "c.jpg", "c.jpg", "c.jpg"]
    base = rng.standard_normal((3, 4))
    images = base[[0, 0, 1, 2, 2, 2]]  # clip-embed repeats an image's row for each caption
    texts = rng.standard_normal((6, 4))
    write_embedding_folder(tmp_path, images, texts, keys=keys)
    result, details = evaluation.retrieval_job("m", embeddings=str(tmp_path), ks=(1, 2))
    expected = retrieval_metrics(base, texts, np.array([0, 0, 1, 2, 2, 2]), ks=(1, 2))
    assert result["metrics"] == pytest.approx(expected)
    assert result["num_images"] == 3 and result["num_texts"] == 6
    assert details["paths"] == ["a.jpg", "b.jpg", "c.jpg"]


def test_embedding_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no img_emb"):
        evaluation.read_embedding_folder(str(tmp_path))
    write_embedding_folder(tmp_path, np.ones((4, 3)), np.ones((4, 3)))
    np.save(tmp_path / "text_emb" / "text_emb_1.npy", np.ones((5, 3)))
    with pytest.raises(ValueError, match="rows"):
        evaluation.read_embedding_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluation.read_embedding_folder(str(tmp_path / "nope"))


def test_read_captions_groups_rows_and_names_bad_lines(tmp_path):
    from PIL import Image

    for name in ("x.png", "y.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    good = tmp_path / "caps.jsonl"
    good.write_text(
        '{"image": "x.png", "caption": "one"}\n{"image": "y.png", "captions": ["two", "three"]}\n'
        '{"image": "x.png", "caption": "four"}\n'
    )
    data = evaluation.read_captions(str(tmp_path), str(good))
    assert [os.path.basename(p) for p in data.paths] == ["x.png", "y.png"]
    assert data.captions == ["one", "two", "three", "four"]
    assert data.text_to_image.tolist() == [0, 1, 1, 0]
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption\nx.png,fine\nmissing.png,oops\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: image file .*missing.png does not exist"):
        evaluation.read_captions(str(tmp_path), str(bad))


def test_clip_eval_retrieval_from_embeddings(tmp_path, capsys):
    rng = np.random.default_rng(2)
    images = rng.standard_normal((8, 4))
    texts = images + 0.3 * rng.standard_normal((8, 4))
    write_embedding_folder(tmp_path / "emb", images, texts)
    out = tmp_path / "result.json"
    assert (
        eval_main(
            ["retrieval", "some-model", "--embeddings", str(tmp_path / "emb"), "-o", str(out), "--quiet"]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert list(result)[:6] == ["dataset", "model", "pretrained", "task", "metrics", "language"]
    assert result["task"] == "zeroshot_retrieval" and result["dataset"] == "emb"
    assert result["metrics"] == pytest.approx(retrieval_metrics(images, texts, np.arange(8), ks=(1, 5, 10)))
    printed = capsys.readouterr().out
    assert "image_retrieval_recall@5" in printed and "mrr" in printed


def test_clip_eval_errors_are_one_line(tmp_path, capsys):
    assert eval_main(["retrieval", "m", "--embeddings", str(tmp_path / "nope"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clip-eval: error:") and "nope" in err and "Traceback" not in err
    assert eval_main(["retrieval", "m", "--quiet"]) == 1
    assert "--captions" in capsys.readouterr().err
