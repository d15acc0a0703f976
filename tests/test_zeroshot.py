"""Zero-shot classification: the paper's recipe by hand, the model's own logits, the three backends
against each other, the trained shapes model's accuracy, template sets, and clip-eval zeroshot."""

import csv
import json
import os

import numpy as np
import pytest

from clip_core.cli import eval_main
from clip_core.encoder import load_encoder
from clip_core.evaluation import zeroshot_job
from clip_core.processing import CLIPProcessor
from clip_core.templates import TEMPLATE_SETS, fill, load_templates
from clip_core.zeroshot import ZeroShotClassifier, check_class_names, softmax
from tests.shapes_model import SHAPES_MODEL, fresh_shapes, random_clip_folder
from tests.tiny_configs import CONFIGS, assert_close

CLASSES = ["cat", "small dog", "red fire truck"]
TEMPLATES = ("a photo of a {}.", "{c}", "a blurry drawing of the {} in the snow.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_clip_folder(tmp_path_factory.mktemp("tiny"), CONFIGS["quick_gelu-eos49407"])


@pytest.fixture(scope="module")
def processor(tiny):
    return CLIPProcessor.from_pretrained(tiny)


def images(n=4, size=32, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_classifier_is_the_papers_recipe_by_hand(tiny, processor):
    import torch

    from clip_torch import CLIPModel

    model = CLIPModel.from_pretrained(tiny)
    expected = []
    with torch.no_grad():
        for name in CLASSES:
            prompts = []
            for template in TEMPLATES:  # one prompt at a time: no padding, no batching
                ids = processor.tokenizer(fill(template, name), return_tensors="pt")
                feature = model.get_text_features(**ids)[0]
                prompts.append(feature / feature.norm())
            mean = torch.stack(prompts).mean(dim=0)
            expected.append((mean / mean.norm()).numpy())
    clf = ZeroShotClassifier(
        load_encoder(tiny, "torch"), CLASSES, TEMPLATES, processor.tokenizer, batch_size=2
    )
    assert clf.weights.shape == (3, 16) and clf.weights.dtype == np.float32
    assert_close(clf.weights, np.stack(expected), "class embeddings")
    assert fill("a {} and {}", "x") == "a x and x" and fill("{c}!", "x") == "x!"


def test_one_template_classifier_gives_the_models_logits(tiny, processor):
    import torch

    from clip_torch import CLIPModel

    model = CLIPModel.from_pretrained(tiny)
    pictures = images()
    inputs = processor(text=CLASSES, images=pictures, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image.numpy()
    clf = ZeroShotClassifier(
        load_encoder(tiny, "torch"), CLASSES, ["{}"], processor.tokenizer, processor.image_processor
    )
    pixels = inputs["pixel_values"].numpy()
    assert_close(clf.logits(clf.encoder.encode_images(pixels)), logits, "logits", atol=1e-4)
    top = clf.classify(pictures, k=2)
    probs = softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(top.indices, order)
    assert_close(top.probs, np.take_along_axis(probs, order, axis=1), "top-2 probabilities")
    assert top.labels[0] == [CLASSES[j] for j in order[0]]
    assert [name for name, _ in top.top(1)] == top.labels[1]
    assert clf.classify(pictures, k=10).probs.shape == (4, 3)  # k is capped at the number of classes


def test_classifier_equal_across_backends(tiny, processor):
    pictures = images(3)
    results = {}
    for backend in ("torch", "tf", "flax"):
        clf = ZeroShotClassifier(
            load_encoder(tiny, backend), CLASSES, "generic", processor.tokenizer, processor.image_processor
        )
        top = clf.classify(pictures, k=3)
        results[backend] = (
            clf.weights,
            clf.probabilities(
                clf.encoder.encode_images(
                    processor.image_processor(pictures, return_tensors="np")["pixel_values"]
                )
            ),
            top,
        )
    for backend in ("tf", "flax"):
        assert_close(results[backend][0], results["torch"][0], f"{backend} class embeddings")
        assert_close(results[backend][1], results["torch"][1], f"{backend} probabilities")
        np.testing.assert_array_equal(results[backend][2].indices, results["torch"][2].indices)


def test_trained_shapes_model_classifies_fresh_shapes():
    """The committed shapes model on 240 images it never saw (24 classes: chance 4 %)."""
    shapes = fresh_shapes(240)
    pictures = [shapes.draw(i) for i in range(len(shapes))]
    labels = np.array([shapes.label(i) for i in range(len(shapes))])
    clf = ZeroShotClassifier.from_pretrained(SHAPES_MODEL, shapes.class_names, "shapes", backend="torch")
    top = clf.classify(pictures, k=5)
    acc1 = np.mean(top.indices[:, 0] == labels)
    acc5 = np.mean((top.indices == labels[:, None]).any(axis=1))
    assert acc1 >= 0.85, acc1
    assert acc5 >= 0.98, acc5


def test_templates():
    assert load_templates() == TEMPLATE_SETS["generic"]
    assert load_templates("aerial") == TEMPLATE_SETS["aerial"]
    assert all("{}" in t for ts in TEMPLATE_SETS.values() for t in ts)
    with pytest.raises(ValueError, match="unknown template set 'nope'"):
        load_templates("nope")
    with pytest.raises(ValueError, match="no '{}'"):
        load_templates(["a photo"])
    with pytest.raises(ValueError, match="one string"):
        load_templates(["a {}"]) and check_class_names("cat")


def test_template_files(tmp_path):
    (tmp_path / "t.txt").write_text("# mine\na {}.\n\nan {} photo.\n")
    assert load_templates(str(tmp_path / "t.txt")) == ("a {}.", "an {} photo.")
    (tmp_path / "t.json").write_text(json.dumps({"cars": ["a photo of a {c}."], "pets": ["a {c} pet."]}))
    assert load_templates(str(tmp_path / "t.json"), key="pets") == ("a {c} pet.",)
    with pytest.raises(ValueError, match="give the entry to use, one of cars, pets"):
        load_templates(str(tmp_path / "t.json"))
    (tmp_path / "l.json").write_text(json.dumps(["{}"]))
    assert load_templates(str(tmp_path / "l.json")) == ("{}",)
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        load_templates(str(tmp_path / "missing.txt"))


def test_class_name_errors(tiny, processor):
    encoder = load_encoder(tiny, "torch")
    with pytest.raises(ValueError, match="'cat' is listed more than once"):
        ZeroShotClassifier(encoder, ["cat", "cat"], tokenizer=processor.tokenizer)
    with pytest.raises(ValueError, match="no classes"):
        ZeroShotClassifier(encoder, [], tokenizer=processor.tokenizer)
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        ZeroShotClassifier(encoder, ["cat"])
    with pytest.raises(ValueError, match="image processor"):
        ZeroShotClassifier(encoder, ["cat"], tokenizer=processor.tokenizer).classify(images(1))


# ---------------------------------------------------------------------------------------------
# clip-eval zeroshot


@pytest.fixture(scope="module")
def shape_files(tmp_path_factory):
    """48 fresh shape images in one-folder-per-class layout, and a labels CSV for the same files."""
    root = tmp_path_factory.mktemp("shapes")
    from PIL import Image

    shapes = fresh_shapes(48, seed=77)
    rows = []
    for i in range(len(shapes)):
        name = shapes.class_names[shapes.label(i)]
        os.makedirs(root / "by_class" / name, exist_ok=True)
        rel = os.path.join(name, f"{i:03d}.png")
        Image.fromarray(shapes.draw(i)).save(root / "by_class" / rel)
        rows.append((rel, name))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "label"), *rows])
    (root / "classes.txt").write_text("\n".join(shapes.class_names) + "\n")
    return root


def test_clip_eval_zeroshot_writes_clip_benchmark_json(shape_files, tmp_path, capsys):
    out, plot = tmp_path / "r.json", tmp_path / "top.png"
    argv = ["zeroshot", SHAPES_MODEL, "--images", str(shape_files / "by_class"), "--templates", "shapes"]
    assert (
        eval_main(
            [
                *argv,
                "--classes",
                str(shape_files / "classes.txt"),
                "-o",
                str(out),
                "--plot",
                str(plot),
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert list(result)[:6] == ["dataset", "model", "pretrained", "task", "metrics", "language"]
    assert result["task"] == "zeroshot_classification" and result["num_images"] == 48
    assert set(result["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert result["metrics"]["acc1"] >= 0.8
    assert "acc1" in capsys.readouterr().out
    assert plot.stat().st_size > 10_000
    # the same images through a labels file give the same numbers
    same, _ = zeroshot_job(
        SHAPES_MODEL,
        str(shape_files / "by_class"),
        str(shape_files / "labels.csv"),
        str(shape_files / "classes.txt"),
        "shapes",
    )
    assert same["metrics"] == pytest.approx(result["metrics"])


def test_clip_eval_zeroshot_reuses_embeddings(shape_files, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    images = str(shape_files / "by_class")
    classes = str(shape_files / "classes.txt")
    direct, details = zeroshot_job(SHAPES_MODEL, images, None, classes, "shapes", backend="flax")
    # a clip-embed folder holding those embeddings in reverse order, named by relative path
    order = np.arange(len(details["paths"]))[::-1]
    os.makedirs(tmp_path / "img_emb")
    os.makedirs(tmp_path / "metadata")
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", details["image_embeds"][order])
    names = [os.path.relpath(details["paths"][i], images) for i in order]
    pq.write_table(pa.table({"image_path": names}), tmp_path / "metadata" / "metadata_0.parquet")
    reused, _ = zeroshot_job(
        SHAPES_MODEL, images, None, classes, "shapes", backend="flax", embeddings=str(tmp_path)
    )
    assert reused["metrics"] == pytest.approx(direct["metrics"])


def test_clip_eval_zeroshot_errors(shape_files, tmp_path, capsys):
    first_image = (shape_files / "labels.csv").read_text().splitlines()[1].split(",")[0]
    bad = tmp_path / "labels.csv"
    bad.write_text(f"image,label\n{first_image},red blob\n")
    argv = ["zeroshot", SHAPES_MODEL, "--images", str(shape_files / "by_class"), "--quiet"]
    assert eval_main([*argv, "--labels", str(bad), "--classes", str(shape_files / "classes.txt")]) == 1
    err = capsys.readouterr().err
    assert "labels.csv:2" in err and "'red blob' is not one of the 24 classes" in err
    assert eval_main(["zeroshot", SHAPES_MODEL, "--images", str(tmp_path / "none"), "--quiet"]) == 1
    assert "none does not exist" in capsys.readouterr().err
    assert (
        eval_main(
            ["zeroshot", str(tmp_path / "no-model"), "--images", str(shape_files / "by_class"), "--quiet"]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith("clip-eval: error:")


def test_readme_block_runs():
    """The README's "Zero-shot, retrieval and explanations" Python block, as written."""
    import re

    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    text = open(readme, encoding="utf-8").read()
    section = text[text.index("## Zero-shot, retrieval and explanations") :]
    section = section[: section.index("\n## ", 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    scope: dict = {}
    exec(compile(block.replace("tests/data/shapes-clip", SHAPES_MODEL), readme, "exec"), scope)
    shapes, top = scope["shapes"], scope["top"]
    assert [row[0] for row in top.labels] == [shapes.class_names[shapes.label(i)] for i in range(6)]
    assert top.top(0)[0][0] == "blue cross" and scope["maps"].maps.shape == (2, 2, 8, 8)


def test_clip_eval_retrieval_with_captions(shape_files, tmp_path, capsys):
    """Two captions per image (a JSONL "captions" list): the command's numbers are the metrics of the
    encoder's embeddings with each caption owned by its image."""
    from clip_core.encoding import encode_images, encode_texts
    from clip_core.metrics import retrieval_metrics

    rows = [line.split(",") for line in (shape_files / "labels.csv").read_text().splitlines()[1:25]]
    captions = [[f"a {label}", f"a drawing of a {label}."] for _, label in rows]
    with open(tmp_path / "caps.jsonl", "w") as f:
        for (image, _), texts in zip(rows, captions):
            f.write(json.dumps({"image": image, "captions": texts}) + "\n")
    out, plot = tmp_path / "r.json", tmp_path / "grid.png"
    argv = ["retrieval", SHAPES_MODEL, "--images", str(shape_files / "by_class"), "--captions"]
    assert (
        eval_main([*argv, str(tmp_path / "caps.jsonl"), "-o", str(out), "--plot", str(plot), "--quiet"]) == 0
    )
    result = json.loads(out.read_text())
    assert result["num_images"] == 24 and result["num_texts"] == 48 and result["dataset"] == "caps"
    encoder, processor = load_encoder(SHAPES_MODEL, "torch"), CLIPProcessor.from_pretrained(SHAPES_MODEL)
    images = encode_images(
        encoder, processor.image_processor, [str(shape_files / "by_class" / r[0]) for r in rows]
    )
    texts = encode_texts(encoder, processor.tokenizer, [t for pair in captions for t in pair])
    expected = retrieval_metrics(images, texts, np.repeat(np.arange(24), 2), ks=(1, 5, 10))
    assert result["metrics"] == pytest.approx(expected, abs=1e-6)
    assert result["metrics"]["text_retrieval_recall@5"] > 0.5  # a trained model, not chance
    assert plot.stat().st_size > 10_000 and "wrote" in capsys.readouterr().out
