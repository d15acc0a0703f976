"""clip-index / clip-search: a constructed CLIP that maps a uniform colour and the caption word for
that colour to the same direction, so a search by caption must find that colour's image; exact
results against numpy; IVF and HNSW recall measured against an exact search."""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from clip_core.config import CLIPConfig
from clip_core.embedding import EmbedError, FolderSink, UnitResult, embed
from clip_core.image_processing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIPImageProcessor
from clip_core.names import canonical_shapes
from clip_core.processing import CLIPProcessor
from clip_core.tokenization_fast import CLIPTokenizerFast
from clip_core.weights import save_state_dict

faiss = pytest.importorskip("faiss")

COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
HIDDEN = 6  # features [r, g, b, -r, -g, -b] of the normalised colour


def colour_features(rgb) -> np.ndarray:
    normalised = (np.asarray(rgb) / 255 - np.asarray(OPENAI_CLIP_MEAN)) / np.asarray(OPENAI_CLIP_STD)
    return np.concatenate([normalised, -normalised]).astype(np.float32)


def write_colour_clip(path) -> str:
    """A one-layer CLIP built by hand: the image tower's class token averages the (mean-colour) patch
    tokens, the text tower's end-of-text token averages the token embeddings, where only colour words
    are non-zero and equal that colour's patch features. Queries and keys are zero (uniform
    attention), values and projections the identity, the MLPs zero."""
    tower = dict(hidden_size=HIDDEN, intermediate_size=4, num_hidden_layers=1, num_attention_heads=1)
    config = CLIPConfig.from_dict(
        dict(
            text_config=dict(tower, max_position_embeddings=16),
            vision_config=dict(tower, image_size=32, patch_size=16),
            projection_dim=HIDDEN,
        )
    )
    state = {name: np.zeros(shape, np.float32) for name, shape in canonical_shapes(config).items()}
    eye = np.eye(HIDDEN, dtype=np.float32)
    for tower in ("text_model", "vision_model"):
        for part in ("v_proj", "out_proj"):
            state[f"{tower}.encoder.layers.0.self_attn.{part}.weight"] = eye
        for norm in ("layer_norm1", "layer_norm2"):
            state[f"{tower}.encoder.layers.0.{norm}.weight"] = np.ones(HIDDEN, np.float32)
    for name in ("text_model.final_layer_norm", "vision_model.pre_layrnorm", "vision_model.post_layernorm"):
        state[f"{name}.weight"] = np.ones(HIDDEN, np.float32)
    state["visual_projection.weight"] = state["text_projection.weight"] = eye
    patch = np.zeros((HIDDEN, 3, 16, 16), np.float32)  # feature c (and 3 + c): +- mean of channel c
    for channel in range(3):
        patch[channel, channel] = 1 / 256
        patch[3 + channel, channel] = -1 / 256
    state["vision_model.embeddings.patch_embedding.weight"] = patch
    tokenizer = CLIPTokenizerFast()
    for word, rgb in COLOURS.items():
        (token,) = tokenizer(word, add_special_tokens=False)["input_ids"]
        state["text_model.embeddings.token_embedding.weight"][token] = colour_features(rgb)
    state["logit_scale"] = np.asarray(2.0, np.float32)
    save_state_dict(state, path)
    config.save_pretrained(path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


def colour_image(rgb, size, seed) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-40, 41, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    model = write_colour_clip(root / "model")
    os.makedirs(root / "images")
    with open(root / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "caption"])
        for i, (word, rgb) in enumerate(COLOURS.items()):
            colour_image(rgb, (40 + 7 * i, 64 - 3 * i), i).save(root / "images" / f"{i}.png")
            writer.writerow([f"{i}.png", f"a photo of a {word} square"])
    out = str(root / "out")
    embed(model, str(root / "images"), str(root / "captions.csv"), out, batch_size=3, shard_size=3)
    return {"root": root, "model": model, "out": out}


def test_clip_search_finds_each_image_by_its_caption(colours, capsys):
    from clip_core.cli import index_main, search_main

    assert index_main([colours["out"], "--kind", "both"]) == 0
    printed = capsys.readouterr().out
    assert "image index: flat over 7 rows of 6 dims" in printed and "text index: flat" in printed
    for i, word in enumerate(COLOURS):
        assert (
            search_main([colours["out"], "--text", f"a photo of a {word} square", "-k", "3", "--json"]) == 0
        )
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert os.path.basename(hits[0]["image_path"]) == f"{i}.png", (word, hits)
        assert hits[0]["caption"] == f"a photo of a {word} square"
        assert hits[0]["score"] > 0.95 and hits[1]["score"] < 0.8, hits  # the noise costs a little
        assert hits[0]["row"] == i and (hits[0]["shard"], hits[0]["shard_row"]) == divmod(i, 3)

    query = colours["root"] / "query.jpg"
    colour_image(COLOURS["yellow"], (50, 30), 99).save(query)
    assert search_main([colours["out"], "--image", str(query), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"2 nearest image rows of 7 in {colours['out']}:"
    assert lines[1].split()[2].endswith("3.png") and "'a photo of a yellow square'" in lines[1]

    assert search_main([str(colours["root"] / "nowhere"), "--text", "x"]) == 1
    assert capsys.readouterr().err.startswith("clip-search: error: ")
    assert search_main([colours["out"], "--image", str(colours["root"] / "captions.csv")]) == 1
    assert "cannot read it" in capsys.readouterr().err


def test_index_load_and_search_in_python(colours):
    from clip_core.search import Index

    index = Index.load(colours["out"], kind="text", backend="flax")
    hits = index.search(text=["a photo of a blue square", "black"], k=2)
    assert [h[0].metadata["caption"] for h in hits] == [
        "a photo of a blue square",
        "a photo of a black square",
    ]
    vector = np.load(os.path.join(colours["out"], "text_emb", "text_emb_1.npy"))[1]
    (hit,) = index.search(vector=vector, k=1)
    assert hit.row == 4 and hit.score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        index.search(text="a", vector=vector)


def write_vectors(out, vectors: np.ndarray, shard_size: int) -> None:
    """An embedding folder holding ``vectors`` as image embeddings (through the real writer)."""
    settings = {"model": "synthetic"}
    sink = FolderSink(out, settings, {"has_images": True, "has_texts": False, "num_shards": None})
    for number, start in enumerate(range(0, len(vectors), shard_size)):
        part = vectors[start : start + shard_size]
        rows = list(range(start, start + len(part)))
        columns = {
            "index": rows,
            "image_path": [f"v{r}" for r in rows],
            "width": [1] * len(rows),
            "height": [1] * len(rows),
        }
        sink.write(UnitResult(number, part, None, columns, [], len(part)), "float32")
    sink.close(True)


def clustered(rows, dim, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    vectors = centres[rng.integers(0, 40, rows)] + 0.3 * rng.standard_normal((rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_exact_and_approximate_indexes(tmp_path):
    from clip_core.search import Index, build_index

    vectors = clustered(3000, 16)
    out = str(tmp_path / "vectors")
    write_vectors(out, vectors, 1000)
    queries = clustered(5, 16, seed=1)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5]

    _, report = build_index(out)
    assert report.index_type == "flat" and report.recall == 1.0
    hits = Index.load(out).search(vector=queries, k=5)
    np.testing.assert_array_equal([[h.row for h in row] for row in hits], expected)
    assert hits[0][0].metadata["image_path"] == f"v{expected[0][0]}"
    assert hits[0][0].shard == expected[0][0] // 1000

    for index_type in ("ivf", "hnsw"):
        index, report = build_index(out, index_type=index_type, recall_queries=300, target_recall=0.97)
        assert report.recall >= 0.97, report
        # The recall, counted here with numpy's exact neighbours and the index's own answers.
        held = vectors[:200]
        truth = np.argsort(-(held @ vectors.T), axis=1, kind="stable")[:, 1:11]
        _, found = index.search(held, 11)
        measured = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
        assert abs(measured - report.recall) < 0.05, (index_type, measured, report.recall)
        loaded = Index.load(out)
        assert loaded.info["index_type"] == index_type and len(loaded) == 3000
    _, low = build_index(out, index_type="ivf", nlist=64, target_recall=0.0, save=False)
    assert low.params["nprobe"] == 1 and low.recall < 0.97  # one list of 64 misses neighbours

    with pytest.raises(EmbedError, match="holds no text embeddings"):
        build_index(out, kind="text")
    write_vectors(str(tmp_path / "fewer"), vectors[:10], 10)
    os.makedirs(tmp_path / "fewer" / "index")
    for name in ("image.faiss", "image.json"):
        os.replace(os.path.join(out, "index", name), tmp_path / "fewer" / "index" / name)
    with pytest.raises(EmbedError, match="rebuild it with clip-index"):
        Index.load(str(tmp_path / "fewer"))


def test_readme_block_runs(colours, monkeypatch):
    readme = open(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    ).read()
    section = readme[readme.index("## Embedding and searching collections") :]
    (block,) = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 1)], flags=re.S)
    monkeypatch.chdir(colours["root"])
    os.symlink("images", "photos")
    block = block.replace('"clip-folder"', repr(colours["model"])).replace("a dog on a beach", "a red square")
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["result"].image_embeddings.shape == (7, HIDDEN)
    assert os.path.basename(scope["hits"][0].metadata["image_path"]) == "0.png"
    assert os.path.exists(os.path.join("emb", "index", "image.faiss"))
