"""clip-embed: a folder + caption table gives transformers' normalised features in all three
backends; the output folder (clip-retrieval's layout), errors.parquet, refusal of other settings;
a run killed with SIGKILL and resumed gives the files of an uninterrupted run; webdataset input;
caption readers; the Ray engine on a local 2-worker Ray equals the local engine."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from clip_core.config import CLIPConfig
from clip_core.embedding import EmbedError, embed, plan_collection, read_manifest, read_table
from clip_core.image_processing import CLIPImageProcessor
from clip_core.names import canonical_shapes
from clip_core.processing import CLIPProcessor
from clip_core.tokenization_fast import CLIPTokenizerFast
from clip_core.weights import save_state_dict
from tests.test_shards import write_shard
from tests.tiny_configs import CONFIGS, assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = [
    "a cat",
    "a photo of a dog on a red sofa next to a window",
    "two birds",
    "an extremely long caption that goes on and on well past the sixteen positions of the tiny model",
    "a bowl of soup",
    "Crème brûlée 🍮",
    "a b c d e f",
    "the end",
    "one more photo of a bicycle",
]
# (file name, how it is written): a mix of formats, modes and sizes; the last three are broken.
IMAGES = [
    ("a.jpg", "RGB", (64, 40)),
    ("b.png", "RGBA", (31, 47)),
    ("c.png", "L", (50, 50)),
    ("d.gif", "P", (40, 23)),
    ("e.jpg", "RGB", (17, 90)),
    ("f.bmp", "RGB", (33, 33)),
    ("g.jpg", "RGB", (120, 80)),
    ("sub/h.webp", "RGB", (45, 60)),
    ("sub/i.png", "RGB", (32, 32)),
]
BROKEN = ["broken-text.jpg", "broken-truncated.jpg", "broken-empty.png"]


def write_model(path, seed=0) -> str:
    config = CLIPConfig.from_dict(CONFIGS["quick_gelu-eos49407"])
    rng = np.random.default_rng(seed)
    state = {k: rng.normal(0, 0.2, s).astype(np.float32) for k, s in canonical_shapes(config).items()}
    state["logit_scale"] = np.asarray(2.0, np.float32)
    save_state_dict(state, path)
    config.save_pretrained(path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    CLIPProcessor(image_processor=processor, tokenizer=CLIPTokenizerFast()).save_pretrained(path)
    return str(path)


def write_images(folder) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for name, mode, (width, height) in IMAGES:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGBA").convert(mode)
        image.save(path)
        paths.append(path)
    with open(os.path.join(folder, BROKEN[0]), "w") as f:
        f.write("this is not a JPEG")
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    with open(os.path.join(folder, BROKEN[1]), "wb") as f:
        f.write(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    open(os.path.join(folder, BROKEN[2]), "wb").close()
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    model = write_model(root / "model")
    images = root / "images"
    paths = write_images(str(images))
    table = root / "captions.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "caption"])
        rows = [(name, caption) for (name, _, _), caption in zip(IMAGES, CAPTIONS)]
        rows.insert(3, (BROKEN[0], "broken one"))
        rows.insert(7, (BROKEN[1], "broken two"))
        rows.append((BROKEN[2], "broken three"))
        writer.writerows(rows)
    return {"root": root, "model": model, "images": str(images), "table": str(table), "paths": paths}


@pytest.fixture(scope="module")
def reference(data):
    """The loop a user writes: processor (texts padded to the batch's longest) and CLIPModel's
    get_image_features / get_text_features, normalised (both equal transformers' in their own suites)."""
    import torch

    from clip_torch import CLIPModel

    model = CLIPModel.from_pretrained(data["model"])
    processor = CLIPProcessor.from_pretrained(data["model"])
    images = [Image.open(p) for p in data["paths"]]
    inputs = processor(
        text=CAPTIONS, images=images, return_tensors="pt", padding=True, truncation=True, max_length=16
    )
    with torch.no_grad():
        image = model.get_image_features(pixel_values=inputs["pixel_values"]).numpy()
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return unit(image), unit(text.numpy())


@pytest.mark.parametrize("backend", ["torch", "tf", "flax"])  # onnx: test_onnx_backend_on_an_exported_folder
def test_embed_equals_normalised_features(data, reference, backend):
    result = embed(data["model"], data["images"], data["table"], backend=backend, batch_size=3, shard_size=4)
    image, text = reference
    assert_close(result.image_embeddings, image, f"{backend} image embeddings")
    assert_close(result.text_embeddings, text, f"{backend} text embeddings")
    assert result.image_embeddings.dtype == np.float32
    assert result.metadata["image_path"] == data["paths"]
    assert result.metadata["caption"] == CAPTIONS
    assert result.metadata["index"] == [0, 1, 2, 4, 5, 6, 8, 9, 10]  # table rows; 3, 7, 11 are broken
    assert list(zip(result.metadata["width"], result.metadata["height"])) == [size for _, _, size in IMAGES]
    assert sorted(os.path.basename(e["path"]) for e in result.error_list) == sorted(BROKEN)
    assert (result.items, result.rows, result.errors) == (12, 9, 3)


def test_text_batches_cover_sorted_captions_within_the_token_budget():
    from types import SimpleNamespace

    from clip_core.embedding import UnitEncoder

    config = SimpleNamespace(projection_dim=4, text_config=SimpleNamespace(max_position_embeddings=77))
    unit_encoder = UnitEncoder(SimpleNamespace(config=config), None, None, batch_size=32, with_images=False)
    lengths = np.sort(np.random.default_rng(0).integers(3, 78, 1000))
    batches = list(unit_encoder._text_batches(lengths))
    assert [b.start for b in batches] == [0] + [b.stop for b in batches[:-1]] and batches[-1].stop == 1000
    sizes = [b.stop - b.start for b in batches[:-1]]
    assert set(sizes) <= {32, 64, 128, 256} and sizes[0] > 32  # short captions in larger batches
    assert all((b.stop - b.start) * lengths[b.stop - 1] <= 32 * 77 or b.stop - b.start <= 32 for b in batches)


def test_glob_input_progress_bar_and_reduced_precision(data, reference, tmp_path, capsys):
    """A glob selects files (broken ones among them still skipped); without quiet a tqdm bar counts
    the embeddings on stderr; bf16 compute stays close to fp32."""
    image, text = reference
    jpegs = embed(data["model"], os.path.join(data["images"], "*.jpg"), batch_size=2, quiet=False)
    assert [os.path.basename(p) for p in jpegs.metadata["image_path"]] == ["a.jpg", "e.jpg", "g.jpg"]
    assert (jpegs.items, jpegs.rows, jpegs.errors, jpegs.text_embeddings) == (5, 3, 2, None)
    assert_close(jpegs.image_embeddings, image[[0, 4, 6]], "images of a glob")
    bar = capsys.readouterr().err
    assert "5/5" in bar and "emb/s" in bar, bar
    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    half = embed(data["model"], texts=str(tmp_path / "captions.txt"), dtype="bf16", batch_size=4)
    cosine = np.sum(half.text_embeddings * text, axis=-1)
    assert half.text_embeddings.dtype == np.float32 and cosine.min() > 0.98, cosine
    assert np.abs(half.text_embeddings - text).max() > 1e-5  # it did compute in bf16


def test_output_folder_resume_and_refusals(data, tmp_path):
    out = str(tmp_path / "out")
    first = embed(data["model"], data["images"], data["table"], out, batch_size=3, shard_size=4)
    assert (first.items, first.rows, first.errors, first.shards_written) == (12, 9, 3, 3)
    import pyarrow.parquet as pq

    images = [np.load(f"{out}/img_emb/img_emb_{n}.npy") for n in range(3)]
    texts = [np.load(f"{out}/text_emb/text_emb_{n}.npy") for n in range(3)]
    metadata = [pq.read_table(f"{out}/metadata/metadata_{n}.parquet").to_pydict() for n in range(3)]
    assert [len(m["index"]) for m in metadata] == [3, 3, 3]  # 4 table rows per shard, one broken in each
    assert [a.shape for a in images] == [a.shape for a in texts] == [(3, 16)] * 3
    assert_close(np.linalg.norm(np.concatenate(images), axis=1), np.ones(9), "unit rows")
    assert [p for m in metadata for p in m["image_path"]] == data["paths"]
    assert set(metadata[0]) == {"image_path", "caption", "width", "height", "index"}
    errors = pq.read_table(f"{out}/errors.parquet").to_pydict()
    assert [os.path.basename(p) for p in errors["path"]] == [BROKEN[0], BROKEN[1], BROKEN[2]]
    assert errors["shard"] == [0, 1, 2] and errors["index"] == [3, 7, 11]
    assert "UnidentifiedImageError" in errors["error"][0] and "truncated" in errors["error"][1]
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["counts"] == {"rows": 9, "errors": 3, "items": 12}
    assert manifest["settings"]["backend"] == "torch" and manifest["settings"]["dtype"] == "float32"
    assert list(manifest["shards"]) == ["0", "1", "2"]

    before = {name: open(os.path.join(out, name), "rb").read() for name in _files(out)}
    again = embed(data["model"], data["images"], data["table"], out, batch_size=3, shard_size=4)
    assert (again.shards_written, again.shards_skipped, again.rows) == (0, 3, 9)
    assert {name: open(os.path.join(out, name), "rb").read() for name in _files(out)} == before

    with pytest.raises(EmbedError, match="batch_size: 3 there, 4 now"):
        embed(data["model"], data["images"], data["table"], out, batch_size=4, shard_size=4)
    other = write_model(tmp_path / "other", seed=1)
    with pytest.raises(EmbedError, match="model: "):
        embed(other, data["images"], data["table"], out, batch_size=3, shard_size=4)
    half = embed(data["model"], data["images"], data["table"], None, batch_size=3, output_dtype="float16")
    assert half.image_embeddings.dtype == np.float16
    assert_close(half.image_embeddings.astype(np.float32), np.concatenate(images), "float16", atol=1e-3)


def _files(out):
    return sorted(
        os.path.relpath(os.path.join(root, f), out)
        for root, _, files in os.walk(out)
        for f in files
        if f != ".lock"
    )


SLOW_RUN = """
import sys, time
import clip_torch.encoder as module
from clip_core.embedding import embed

original = module.TorchEncoder.encode_images
def slow(self, pixels):
    time.sleep(0.4)
    return original(self, pixels)
module.TorchEncoder.encode_images = slow
embed(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], batch_size=2, shard_size=2)
"""


def test_killed_run_resumes_to_the_files_of_an_uninterrupted_run(data, tmp_path):
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    args = [data["model"], data["images"], data["table"]]
    env = {**os.environ, "PYTHONPATH": ROOT}
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args, killed], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if os.path.exists(os.path.join(killed, "manifest.json")) and read_manifest(killed)["shards"]:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    done = len(read_manifest(killed)["shards"])
    assert 1 <= done < 6 and not read_manifest(killed)["complete"]

    resumed = embed(*args, killed, batch_size=2, shard_size=2)
    assert resumed.shards_skipped == done and resumed.shards_written == 6 - done
    embed(*args, whole, batch_size=2, shard_size=2)
    assert _files(killed) == _files(whole)
    for name in _files(whole):
        with open(os.path.join(killed, name), "rb") as a, open(os.path.join(whole, name), "rb") as b:
            assert a.read() == b.read(), f"{name} differs after resuming"


def test_webdataset_input(data, tmp_path):
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    files = data["paths"]
    first = [
        (f"s0/{i:03d}", {files[i].rsplit(".", 1)[1]: read(files[i]), "txt": CAPTIONS[i].encode()})
        for i in range(4)
    ]
    first.insert(2, ("s0/bad", {"jpg": b"garbage", "txt": b"bad"}))
    second = [
        ("s1/000", {"json": json.dumps({"caption": CAPTIONS[4]}).encode(), "png": read(files[4])}),
        ("s1/nothing", {"txt": b"a caption without an image"}),
        ("s1/002", {"jpg": read(files[6]), "txt": CAPTIONS[6].encode()}),
    ]
    write_shard(tmp_path / "shard-000.tar", first)
    write_shard(tmp_path / "shard-001.tar", second)
    out = str(tmp_path / "out")
    pattern = str(tmp_path / "shard-{000..001}.tar")
    result = embed(data["model"], pattern, out=out, batch_size=2)
    assert (result.items, result.rows, result.errors, result.shards_written) == (8, 6, 2, 2)
    import pyarrow.parquet as pq

    meta = [pq.read_table(f"{out}/metadata/metadata_{n}.parquet").to_pydict() for n in range(2)]
    assert meta[0]["image_path"] == ["s0/000", "s0/001", "s0/002", "s0/003"]
    assert meta[0]["index"] == [0, 1, 3, 4] and meta[1]["index"] == [0, 2]
    assert meta[1]["tar"] == [str(tmp_path / "shard-001.tar")] * 2
    assert meta[0]["caption"] + meta[1]["caption"] == [CAPTIONS[i] for i in (0, 1, 2, 3, 4, 6)]
    errors = pq.read_table(f"{out}/errors.parquet").to_pydict()
    assert errors["path"] == ["s0/bad", "s1/nothing"] and errors["error"][1] == "the sample has no image"

    # The same images and captions from files give the same rows.
    files_run = embed(data["model"], data["images"], data["table"], batch_size=2)
    rows = [0, 1, 2, 3, 4, 6]
    got_images = np.concatenate([np.load(f"{out}/img_emb/img_emb_{n}.npy") for n in range(2)])
    got_texts = np.concatenate([np.load(f"{out}/text_emb/text_emb_{n}.npy") for n in range(2)])
    assert_close(got_images, files_run.image_embeddings[rows], "webdataset images")
    assert_close(got_texts, files_run.text_embeddings[rows], "webdataset captions")


def test_caption_readers_and_text_only_runs(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "c.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": c}) + "\n" for c in CAPTIONS), encoding="utf-8"
    )
    (tmp_path / "c.tsv").write_text("title\n" + "\n".join(c.replace("\t", " ") for c in CAPTIONS) + "\n")
    pq.write_table(pa.table({"caption": CAPTIONS, "n": list(range(len(CAPTIONS)))}), tmp_path / "c.parquet")
    for name in ("c.txt", "c.jsonl", "c.tsv", "c.parquet"):
        assert read_table(str(tmp_path / name)) == (CAPTIONS, None), name

    out = str(tmp_path / "texts")
    result = embed(data["model"], texts=str(tmp_path / "c.txt"), out=out, batch_size=2, shard_size=5)
    assert (result.rows, result.shards_written) == (len(CAPTIONS), 2)
    assert sorted(os.listdir(out)) == [".lock", "errors.parquet", "manifest.json", "metadata", "text_emb"]
    with_images = embed(data["model"], data["images"], data["table"], batch_size=4)
    texts = np.concatenate([np.load(f"{out}/text_emb/text_emb_{n}.npy") for n in range(2)])
    assert_close(texts, with_images.text_embeddings, "text-only run")

    (tmp_path / "bad.csv").write_text("words,n\nhello,1\n")
    with pytest.raises(EmbedError, match=r"bad\.csv: no caption column"):
        plan_collection(texts=str(tmp_path / "bad.csv"))
    with pytest.raises(EmbedError, match="no image column to pair"):
        plan_collection(images=data["images"], texts=str(tmp_path / "c.txt"))
    with pytest.raises(EmbedError, match="no such folder"):
        plan_collection(images=str(tmp_path / "missing"))
    with pytest.raises(EmbedError, match="nothing to embed"):
        plan_collection()


def test_cli(data, tmp_path, capsys):
    from clip_core.cli import embed_main

    with pytest.raises(SystemExit) as exit_info:
        embed_main(["--help"])
    assert exit_info.value.code == 0 and "clip-retrieval's layout" in capsys.readouterr().out
    out = str(tmp_path / "out")
    assert (
        embed_main(
            [data["model"], "--out", out, "--texts", data["table"], "--quiet", "--images", data["images"]]
        )
        == 0
    )
    assert "embedded 9 of 12 items" in capsys.readouterr().out
    cases = [
        ([data["model"], "--out", str(tmp_path / "o2")], "nothing to embed"),
        ([data["model"], "--out", str(tmp_path / "o3"), "--images", str(tmp_path / "nope")], "nope"),
        ([str(tmp_path / "no-model"), "--out", str(tmp_path / "o4"), "--texts", data["table"]], "no-model"),
        (
            [
                data["model"],
                "--out",
                out,
                "--texts",
                data["table"],
                "--images",
                data["images"],
                "--batch-size",
                "5",
            ],
            "batch_size",
        ),
    ]
    for argv, message in cases:
        assert embed_main([*argv, "--quiet"]) == 1
        error = capsys.readouterr().err
        assert error.startswith("clip-embed: error: ") and message in error, error
        assert "Traceback" not in error
    assert not os.path.exists(tmp_path / "o4")  # a run that failed before writing leaves no folder


def test_ray_engine_equals_local_engine(data, tmp_path):
    pytest.importorskip("ray.data")
    local, distributed = str(tmp_path / "local"), str(tmp_path / "ray")
    args = (data["model"], data["images"], data["table"])
    embed(*args, local, batch_size=3, shard_size=3)
    result = embed(*args, distributed, batch_size=3, shard_size=3, engine="ray", num_actors=2)
    assert (result.rows, result.errors, result.shards_written) == (9, 3, 4)
    import pyarrow.parquet as pq

    assert _files(local) == _files(distributed)
    for name in _files(local):
        a, b = os.path.join(local, name), os.path.join(distributed, name)
        if name.endswith(".npy"):
            assert_close(np.load(b), np.load(a), name)
        elif name.endswith(".parquet"):
            assert pq.read_table(a).equals(pq.read_table(b)), name
        else:
            assert read_manifest(a.rsplit("/", 1)[0]) == read_manifest(b.rsplit("/", 1)[0])


def test_onnx_backend_on_an_exported_folder(data, reference, tmp_path):
    """--backend onnx on a clip-export folder (its graphs, config, tokenizer and processor files)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from clip_core.cli import embed_main
    from clip_core.export import export

    exported = str(tmp_path / "onnx")
    export(data["model"], exported, to="onnx", progress=False)
    out = str(tmp_path / "out")
    argv = [exported, "--backend", "onnx", "--out", out, "--images", data["images"], "--texts", data["table"]]
    assert embed_main([*argv, "--batch-size", "3", "--shard-size", "4", "--quiet"]) == 0
    image, text = reference
    for kind, expected in (("img_emb", image), ("text_emb", text)):
        parts = [np.load(os.path.join(out, kind, f"{kind}_{n}.npy")) for n in range(3)]
        assert_close(np.concatenate(parts), expected, f"onnx {kind}")
    assert read_manifest(out)["settings"]["backend"] == "onnx"
    if importlib.util.find_spec("faiss") is not None:  # clip-search's queries through the folder's engine
        from clip_core.search import Index

        for kind, query in (("text", {"text": CAPTIONS[5]}), ("image", {"image": data["paths"][5]})):
            (hit,) = Index.load(out, kind).search(**query, k=1)
            assert hit.row == 5 and hit.score == pytest.approx(1, abs=1e-5), (kind, hit)


def test_clip_eval_reads_a_clip_embed_folder(tmp_path, capsys):
    """clip-embed a captioned shapes folder (two captions an image, one broken image, several shards),
    then clip-eval retrieval --embeddings on the folder as it is: the metrics of the embedded arrays
    with each caption owned by its image; the same arrays as clip-eval computes from the images and
    captions; zero-shot reuses its image embeddings; an unfinished folder is refused."""
    import shutil

    from clip_core.cli import embed_main, eval_main
    from clip_core.metrics import retrieval_metrics
    from tests.shapes_model import SHAPES_MODEL, fresh_shapes

    shapes = fresh_shapes(12, seed=99)
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(len(shapes)):
        Image.fromarray(shapes.draw(i)).save(images / f"{i:02d}.png")
        name = shapes.class_names[shapes.label(i)]
        rows += [(f"{i:02d}.png", f"a {name}"), (f"{i:02d}.png", f"a drawing of a {name}.")]
        if i == 4:
            (images / "broken.png").write_bytes(b"not a png")
            rows.append(("broken.png", "a broken image"))
    with open(tmp_path / "caps.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image_path", "caption"), *rows])
    out = str(tmp_path / "emb")
    argv = [SHAPES_MODEL, "--out", out, "--images", str(images), "--texts", str(tmp_path / "caps.csv")]
    assert embed_main([*argv, "--shard-size", "5", "--batch-size", "4", "--quiet"]) == 0
    in_memory = embed(SHAPES_MODEL, str(images), str(tmp_path / "caps.csv"), batch_size=4)
    assert in_memory.rows == 24 and in_memory.errors == 1

    result_file = tmp_path / "r.json"
    assert eval_main(["retrieval", SHAPES_MODEL, "--embeddings", out, "-o", str(result_file), "--quiet"]) == 0
    result = json.loads(result_file.read_text())
    assert (result["num_images"], result["num_texts"]) == (12, 24)
    expected = retrieval_metrics(
        in_memory.image_embeddings[::2], in_memory.text_embeddings, np.repeat(np.arange(12), 2), (1, 5, 10)
    )
    assert result["metrics"] == pytest.approx(expected, abs=1e-6)
    assert result["metrics"]["text_retrieval_recall@5"] > 0.5  # a trained model, not chance
    # the arrays clip-eval read equal those it computes itself from the images and captions
    from clip_core.evaluation import retrieval_job

    captions_only = tmp_path / "caps-ok.csv"
    captions_only.write_text("".join(line for line in open(tmp_path / "caps.csv") if "broken" not in line))
    _, direct = retrieval_job(SHAPES_MODEL, str(images), str(captions_only))
    _, reused = retrieval_job(SHAPES_MODEL, embeddings=out)
    assert_close(reused["image_embeds"], direct["image_embeds"], "image embeddings read back")
    assert_close(reused["text_embeds"], direct["text_embeds"], "text embeddings read back")
    assert list(reused["text_to_image"]) == list(direct["text_to_image"])
    assert reused["captions"] == direct["captions"]
    # zero-shot from the same folder: its images matched to a labels file by path
    from clip_core.evaluation import zeroshot_job

    with open(tmp_path / "labels.csv", "w", newline="") as f:
        labels = [(f"{i:02d}.png", shapes.class_names[shapes.label(i)]) for i in range(len(shapes))]
        csv.writer(f).writerows([("image", "label"), *labels])
    (tmp_path / "classes.txt").write_text("\n".join(shapes.class_names) + "\n")
    zeroshot = [
        zeroshot_job(
            SHAPES_MODEL,
            str(images),
            str(tmp_path / "labels.csv"),
            str(tmp_path / "classes.txt"),
            "shapes",
            **kw,
        )
        for kw in ({}, {"embeddings": out})
    ]
    assert_close(zeroshot[1][1]["image_embeds"], zeroshot[0][1]["image_embeds"], "zero-shot images read back")
    assert zeroshot[1][0]["metrics"] == pytest.approx(zeroshot[0][0]["metrics"])
    # only the shards the manifest lists are read (not the files of a shard a killed run was writing)
    stray = str(tmp_path / "stray")
    shutil.copytree(out, stray)
    np.save(os.path.join(stray, "img_emb", "img_emb_9.npy"), np.ones((3, 64), np.float32))
    np.save(os.path.join(stray, "text_emb", "text_emb_9.npy"), np.ones((3, 64), np.float32))
    assert retrieval_job(SHAPES_MODEL, embeddings=stray)[0]["metrics"] == result["metrics"]
    # an unfinished run's folder is refused, naming it
    unfinished = str(tmp_path / "unfinished")
    shutil.copytree(out, unfinished)
    manifest = read_manifest(unfinished)
    manifest["complete"] = False
    with open(os.path.join(unfinished, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    capsys.readouterr()
    assert eval_main(["retrieval", SHAPES_MODEL, "--embeddings", unfinished, "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("clip-eval: error:") and "has not finished" in error and unfinished in error


def test_decompression_bombs_are_errors_not_decoded(data, tmp_path, monkeypatch):
    """An image over PIL's pixel limit lands in errors.parquet as refused, before it is decoded, also
    under twice the limit, where PIL alone would decode it with only a warning."""
    import warnings

    import pyarrow.parquet as pq

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "big.png")  # 1,600 pixels
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "small.png")  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        result = embed(data["model"], str(folder), None, str(tmp_path / "out"))
    assert (result.rows, result.errors) == (1, 1)
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pydict()
    assert [os.path.basename(p) for p in errors["path"]] == ["big.png"]
    assert "decompression bomb" in errors["error"][0] and "big.png" in errors["error"][0]
