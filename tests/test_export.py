"""clip-export: every format reloads in a fresh process with its plain runtime (onnxruntime,
tensorflow, ai-edge-litert, jax; our package is not imported there) and gives what the source model
gives; bad options are clear errors; a failing check leaves nothing behind; int8's accuracy cost is
measured; the ONNX engine serves the encoder protocol.

The source is a random tiny CLIP, whose int8 figures are recomputed here; int8's zero-shot cost is
measured on the trained shapes model (tests/data/shapes-clip), whose accuracy means something.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clip_core.config import CLIPConfig
from clip_core.export import ExportError, export, export_options, make_probe, read_manifest, row_cosines
from clip_core.weights import random_state, save_state_dict
from tests.tiny_configs import CONFIGS, assert_close, padded_texts

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"onnx": 1e-5, "savedmodel": 1e-5, "jax": 1e-5, "tflite": 1e-4}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A checkpoint folder of a random tiny CLIP (OpenAI's vocabulary, so captions tokenize)."""
    config = CLIPConfig(**CONFIGS["quick_gelu-eos49407"])
    folder = str(tmp_path_factory.mktemp("source"))
    config.save_pretrained(folder)
    save_state_dict(random_state(config, seed=3), folder)
    return folder


@pytest.fixture(scope="module")
def torch_model(source):
    from clip_torch import CLIPModel

    return CLIPModel.from_pretrained(source)


@pytest.fixture(scope="module")
def inputs(torch_model):
    """Inputs unlike the probe's: three padded texts, two images."""
    ids, mask = padded_texts(torch_model.config.text_config)
    pixels = np.random.default_rng(5).normal(size=(2, 3, 32, 32)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


@pytest.fixture(scope="module")
def reference(torch_model, inputs):
    """What clip_torch gives for ``inputs``, by "tower/output"."""
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        full = torch_model(**t)
        return {
            "text/text_embeds": torch_model.get_text_features(t["input_ids"], t["attention_mask"]).numpy(),
            "text/last_hidden_state": torch_model.text_model(
                t["input_ids"], t["attention_mask"]
            ).last_hidden_state.numpy(),
            "vision/image_embeds": torch_model.get_image_features(t["pixel_values"]).numpy(),
            "vision/last_hidden_state": torch_model.vision_model(t["pixel_values"]).last_hidden_state.numpy(),
            **{
                f"full/{name}": getattr(full, name).numpy()
                for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")
            },
        }


@pytest.fixture(scope="module")
def exports(source, tmp_path_factory):
    """One export per format (the ONNX one through the clip-export command)."""
    from clip_core.cli import export_main

    root = tmp_path_factory.mktemp("exports")
    folders = {fmt: str(root / fmt) for fmt in TOLERANCE}
    assert (
        export_main(
            [
                source,
                folders["onnx"],
                "--to",
                "onnx",
                "--towers",
                "text,vision,full",
                "--hidden-states",
                "--quiet",
            ]
        )
        == 0
    )
    reports = {"onnx": read_manifest(folders["onnx"], "onnx")}
    options = {
        "savedmodel": dict(towers="text,vision,full", hidden_states=True),
        "tflite": dict(hidden_states=True),
        "jax": dict(towers="text,vision,full"),
    }
    for fmt, kwargs in options.items():
        if fmt != "jax" and not _has("tensorflow"):
            continue
        if fmt == "tflite" and not _has("ai_edge_litert"):
            continue
        if fmt == "jax" and not _has("flax"):
            continue
        report = export(source, folders[fmt], to=fmt, progress=False, **kwargs)
        reports[fmt] = report.to_dict()
    return folders, reports


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def reloaded(exports, inputs, tmp_path_factory):
    """Every export run by its plain runtime in one fresh process (tests/export_runtimes.py)."""
    folders, reports = exports
    work = tmp_path_factory.mktemp("reload")
    jobs = [[fmt, folders[fmt]] for fmt in reports]
    (work / "jobs.json").write_text(json.dumps(jobs))
    np.savez(work / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "export_runtimes.py"),
            *(str(work / n) for n in ("jobs.json", "inputs.npz", "out.npz")),
        ],
        check=True,
        cwd=str(work),
        env=env,
        timeout=300,
    )
    return dict(np.load(work / "out.npz"))


@pytest.mark.parametrize("fmt", list(TOLERANCE))
def test_export_reloads_in_a_fresh_process_and_matches_the_source(fmt, exports, reloaded, reference):
    folders, reports = exports
    if fmt not in reports:
        pytest.skip(f"the runtime for {fmt} is not installed")
    assert f"{fmt}/error" not in reloaded, str(reloaded.get(f"{fmt}/error"))
    assert list(reloaded["imported"]) == [], "the fresh process imported our package"
    got = {k.split("/", 1)[1]: v for k, v in reloaded.items() if k.startswith(f"{fmt}/")}
    expected = {
        "onnx": set(reference),
        "savedmodel": set(reference),
        "tflite": {k for k in reference if not k.startswith("full/")},
        "jax": {k for k in reference if "hidden" not in k},
    }[fmt]
    assert set(got) == expected
    for name in expected:
        assert_close(got[name], reference[name], f"{fmt} {name}", atol=TOLERANCE[fmt])
    # the on-the-spot check passed, within the format's tolerance, and says so in the manifest
    checks = reports[fmt]["checks"]
    assert set(checks) == expected
    assert all(c["passed"] and c["max_abs_diff"] <= TOLERANCE[fmt] for c in checks.values())


def test_export_folder_holds_the_config_and_a_manifest(exports, source):
    folders, reports = exports
    manifest = read_manifest(folders["onnx"], "onnx")
    assert manifest["towers"] == ["text", "vision", "full"] and manifest["hidden_states"] is True
    assert manifest["logit_scale"] == pytest.approx(np.exp(2.6592), rel=1e-5)
    assert CLIPConfig.from_pretrained(folders["onnx"]) == CLIPConfig.from_pretrained(source)
    if "savedmodel" in reports:  # TF Serving's layout: a numbered version folder
        assert os.path.isfile(os.path.join(folders["savedmodel"], "1", "saved_model.pb"))
    with pytest.raises(ExportError, match="holds a onnx export, not jax"):
        read_manifest(folders["onnx"], "jax")


def test_int8_onnx_reports_its_accuracy_cost(source, torch_model, tmp_path):
    from clip_core.onnx_engine import OnnxCLIP

    report = export(source, tmp_path / "int8", to="onnx", quantize="int8", progress=False)
    q = report.quantization
    assert set(q) >= {
        "text_cosine_mean",
        "image_cosine_min",
        "zero_shot_agreement",
        "zero_shot_accuracy_int8",
    }
    assert all(c["passed"] is None for c in report.checks.values())  # measured, not judged
    # recompute the figures here from the probe, ONNX Runtime and torch
    probe = make_probe(torch_model.config)
    int8 = OnnxCLIP(tmp_path / "int8")
    with torch.no_grad():
        ref_images = torch_model.get_image_features(torch.from_numpy(probe.pixel_values)).numpy()
        ref_texts = torch_model.get_text_features(
            torch.from_numpy(probe.input_ids), torch.from_numpy(probe.attention_mask)
        ).numpy()
    # int8 activations are quantised per call, so the batches matter: the check's are 16 images
    images = np.concatenate(
        [int8.get_image_features(probe.pixel_values[i : i + 16]) for i in range(0, 48, 16)]
    )
    texts = int8.get_text_features(probe.input_ids, probe.attention_mask)
    assert q["image_cosine_min"] == pytest.approx(row_cosines(ref_images, images).min(), abs=1e-6)
    assert q["text_cosine_mean"] == pytest.approx(row_cosines(ref_texts, texts).mean(), abs=1e-6)
    assert 0.99 < q["text_cosine_mean"] < 1.0  # int8 weights: close, not equal
    best = np.argmax(ref_images @ (ref_texts / np.linalg.norm(ref_texts, axis=-1, keepdims=True)).T, axis=-1)
    best_q = np.argmax(images @ (texts / np.linalg.norm(texts, axis=-1, keepdims=True)).T, axis=-1)
    assert q["zero_shot_agreement"] == pytest.approx((best == best_q).mean())
    assert "int8 accuracy on the shapes probe" in str(report)


def test_int8_cost_on_the_trained_shapes_model(tmp_path):
    """The probe's captions go through the model's own tokenizer (its folder's), so the trained shapes
    model recognises the probe and the zero-shot figures measure what int8 costs."""
    from tests.shapes_model import SHAPES_MODEL

    q = export(SHAPES_MODEL, tmp_path / "int8", to="onnx", quantize="int8", progress=False).quantization
    assert q["zero_shot_accuracy_fp32"] >= 0.9  # 1/24 with ids the model never learned
    assert q["zero_shot_accuracy_int8"] >= 0.9
    assert q["zero_shot_agreement"] >= 0.9


def test_fp16_onnx_is_checked_by_cosine(source, tmp_path):
    report = export(source, tmp_path / "fp16", to="onnx", dtype="fp16", towers="text", progress=False)
    check = report.checks["text/text_embeds"]
    assert check["passed"] and check["min_cosine"] >= 0.999 and check["max_abs_diff"] > 0


def test_a_failing_check_raises_and_leaves_no_folder(source, tmp_path, monkeypatch):
    import clip_torch.export as torch_export

    original = torch_export.runner

    def sabotaged(folder, options):
        run = original(folder, options)
        return lambda tower, batch: {k: v + 1e-3 for k, v in run(tower, batch).items()}

    monkeypatch.setattr(torch_export, "runner", sabotaged)
    with pytest.raises(ExportError, match="does not match its source"):
        export(source, tmp_path / "bad", to="onnx", towers="vision", progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--to", "savedmodel", "--quantize", "int8"], "--to savedmodel cannot express --quantize int8"),
        (["--to", "tflite", "--dtype", "bf16"], "TFLite has no bfloat16"),
        (["--to", "tflite", "--towers", "full"], "--towers full"),
        (["--to", "onnx", "--dtype", "bf16"], "--to onnx cannot express --dtype bf16"),
        (["--to", "onnx", "--towers", "text,images"], "choose from text, vision, full"),
        (["--to", "onnx", "--quantize", "int8", "--dtype", "fp16"], "int8 quantises fp32 weights"),
        (["--to", "jax", "--quantize", "int8"], "--to jax cannot express --quantize int8"),
    ],
)
def test_bad_options_are_clear_errors(args, message, source, tmp_path, capsys):
    from clip_core.cli import export_main

    assert export_main([source, str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clip-export: error:") and message in err
    assert not (tmp_path / "out").exists()


def test_bad_model_and_existing_out_are_clear_errors(source, tmp_path, capsys):
    from clip_core.cli import export_main

    assert export_main([str(tmp_path / "missing"), str(tmp_path / "out"), "--to", "onnx", "--quiet"]) == 1
    assert "clip-export: error:" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert export_main([source, str(tmp_path / "taken"), "--to", "onnx", "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")  # an OSError (here NotADirectoryError) names the path
    assert export_main([source, str(tmp_path / "a-file" / "sub" / "out"), "--to", "onnx", "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"clip-export: error: [Errno 20] Not a directory: '{tmp_path}")
    with pytest.raises(ExportError, match="unknown export format 'pt'"):
        export_options("pt")


def test_onnx_encoder_equals_the_torch_encoder(exports, source):
    from clip_core.encoder import load_encoder
    from clip_core.onnx_engine import OnnxCLIP, session_options

    folders, _ = exports
    onnx = load_encoder(folders["onnx"], "onnx")
    from_checkpoint = load_encoder(source, "onnx")  # exported on the fly
    reference = load_encoder(source, "torch")
    probe = make_probe(reference.config, per_class=1)
    for encoder in (onnx, from_checkpoint):
        assert_close(
            encoder.encode_images(probe.pixel_values), reference.encode_images(probe.pixel_values), "images"
        )
        assert_close(
            encoder.encode_texts(probe.input_ids, probe.attention_mask),
            reference.encode_texts(probe.input_ids, probe.attention_mask),
            "texts",
        )
        assert encoder.logit_scale == pytest.approx(reference.logit_scale, rel=1e-6)
    options = session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads >= 1
    with pytest.raises(ValueError, match="has no full model"):
        OnnxCLIP(folders["onnx"], towers=["text"]).run("full", {})


def test_tf_saved_model_save_of_the_model_itself(source, tmp_path, reference, inputs):
    tf = pytest.importorskip("tensorflow")
    from clip_tf import TFCLIPModel, TFCLIPVisionModelWithProjection

    model = TFCLIPModel.from_pretrained(source)
    tf.saved_model.save(model, str(tmp_path / "plain"))
    serve = tf.saved_model.load(str(tmp_path / "plain")).signatures["serving_default"]
    ints = {k: v.astype(np.int32) if k != "pixel_values" else v for k, v in inputs.items()}
    out = serve(**{k: tf.constant(v) for k, v in ints.items()})  # int32 ids, as transformers' serving_default
    assert_close(out["logits_per_image"].numpy(), reference["full/logits_per_image"], "logits_per_image")
    vision = TFCLIPVisionModelWithProjection.from_pretrained(source)
    tf.saved_model.save(vision, str(tmp_path / "vision"))
    serve = tf.saved_model.load(str(tmp_path / "vision")).signatures["serving_default"]
    out = serve(pixel_values=tf.constant(inputs["pixel_values"]))
    assert_close(out["image_embeds"].numpy(), reference["vision/image_embeds"], "image_embeds")
