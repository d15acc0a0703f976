"""clip_core.conversion and clip-convert: transformers folders in each format, OpenAI / open_clip state dicts, dtypes, failures.

transformers is the judge of "loads": every converted folder is read back by transformers' own
CLIPModel / TFCLIPModel / FlaxCLIPModel (our backends have their own cross-framework suite).
OpenAI and open_clip sources are judged against tests/openai_reference.py, an independent numpy
forward pass on the original names.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clip_core.cli import convert_main  # noqa: E402
from clip_core.conversion import convert  # noqa: E402
from clip_core.formats import open_checkpoint  # noqa: E402
from clip_core.weights import CheckpointError  # noqa: E402
from tests.openai_reference import encode_image, encode_text, random_openai_state_dict  # noqa: E402
from tests.tiny_configs import NAMED, assert_same_state, clip_config, padded_texts, random_pixels  # noqa: E402

WEIGHT_FILES = {
    "safetensors": "model.safetensors",
    "pt": "pytorch_model.bin",
    "tf": "tf_model.h5",
    "flax": "flax_model.msgpack",
}
FOLDER_FILES = {
    "config.json",
    "preprocessor_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
}


def hf_inputs():
    config = clip_config("small")
    ids, mask = padded_texts(config.text_config, lengths=(9, 6), seq=9, bos=True)
    return ids, mask, random_pixels(config.vision_config, seed=0)


def torch_outputs(model):
    ids, mask, pixels = hf_inputs()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            pixel_values=torch.from_numpy(pixels),
        )
    return {k: getattr(out, k).numpy() for k in ("logits_per_image", "text_embeds", "image_embeds")}


def read_all(path):
    with open_checkpoint(path) as reader:
        return {name: reader[name] for name in reader}


def leftovers(folder):
    """Hidden temporary siblings a conversion into ``folder`` might have left."""
    parent, base = os.path.split(os.path.abspath(folder))
    return [n for n in os.listdir(parent) if n.startswith(f".{base}.")]


def _clear_keras_names():
    """Keras numbers the names of later models (tfclip_model_1); other test files compare h5 names."""
    from transformers.modeling_tf_utils import keras

    keras.backend.clear_session()


@pytest.fixture(scope="module")
def hf(tmp_path_factory, reference_checkpoint):
    """The "small" reference checkpoint (tests/conftest.py) saved by transformers in each of the four formats."""
    from clip_core.tokenization_fast import CLIPTokenizerFast

    model = transformers.CLIPModel.from_pretrained(reference_checkpoint("small")).eval()
    root = tmp_path_factory.mktemp("hf")
    folders = {fmt: str(root / fmt) for fmt in WEIGHT_FILES}
    model.save_pretrained(folders["safetensors"], safe_serialization=True)
    model.save_pretrained(folders["pt"], safe_serialization=False)
    CLIPTokenizerFast().save_pretrained(folders["safetensors"])  # tokenizer files to carry over
    tf_model = transformers.TFCLIPModel.from_pretrained(folders["pt"], from_pt=True)
    tf_model.save_pretrained(folders["tf"])
    del tf_model
    _clear_keras_names()
    flax_model = transformers.FlaxCLIPModel.from_pretrained(folders["pt"], from_pt=True)
    flax_model.save_pretrained(folders["flax"])
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    return {"model": model, "folders": folders, "state": state, "outputs": torch_outputs(model)}


@pytest.mark.parametrize("source_format", list(WEIGHT_FILES))
def test_transformers_folder_converts_to_every_format(hf, tmp_path, source_format):
    out = tmp_path / "out"
    summary = convert(hf["folders"][source_format], out, formats=("all",), progress=False)
    assert set(os.listdir(out)) == FOLDER_FILES | set(WEIGHT_FILES.values())
    assert summary.tensors == len(hf["state"])
    assert summary.parameters == sum(v.size for v in hf["state"].values())
    assert summary.bytes == sum(os.path.getsize(out / f) for f in WEIGHT_FILES.values())
    for filename in WEIGHT_FILES.values():
        assert_same_state(read_all(out / filename), hf["state"])
    # transformers' torch model reads the folder and computes what the source model computed
    loaded = transformers.CLIPModel.from_pretrained(out).eval()
    loaded_state = {k: v.numpy() for k, v in loaded.state_dict().items() if not k.endswith("position_ids")}
    assert_same_state(loaded_state, hf["state"])
    for name, want in hf["outputs"].items():
        np.testing.assert_array_equal(torch_outputs(loaded)[name], want, err_msg=name)
    if source_format == "safetensors":  # the source's tokenizer files travel with it
        for f in FOLDER_FILES - {"config.json", "preprocessor_config.json"}:
            assert (out / f).read_bytes() == open(os.path.join(hf["folders"]["safetensors"], f), "rb").read()
    assert not leftovers(out)


def test_transformers_loads_each_single_format_folder(hf, tmp_path):
    """pytorch_model.bin alone, tf_model.h5 alone, flax_model.msgpack alone: each loads in transformers."""
    ids, mask, pixels = hf_inputs()
    want = hf["outputs"]
    source = hf["folders"]["tf"]  # from TF's layout to every framework's
    pt = convert(source, tmp_path / "pt", formats=("pt",), progress=False)
    assert "pytorch_model.bin" in pt.files and "model.safetensors" not in pt.files
    model = transformers.CLIPModel.from_pretrained(tmp_path / "pt", use_safetensors=False).eval()
    for name in want:
        np.testing.assert_array_equal(torch_outputs(model)[name], want[name], err_msg=name)

    convert(source, tmp_path / "tf", formats=("tf",), progress=False)
    tf_model = transformers.TFCLIPModel.from_pretrained(tmp_path / "tf")
    tf_out = tf_model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    del tf_model
    _clear_keras_names()
    for name in want:
        np.testing.assert_allclose(tf_out[name].numpy(), want[name], atol=2e-5, err_msg=name)

    # Flax: transformers' loader gives exactly the source weights (an un-jitted Flax forward pass
    # costs seconds of dispatch; the weights decide the outputs)
    from flax.traverse_util import flatten_dict

    from clip_core.weights import from_flax_params

    convert(hf["folders"]["pt"], tmp_path / "flax", formats=("flax",), progress=False)
    _, params = transformers.FlaxCLIPModel.from_pretrained(tmp_path / "flax", _do_init=False)
    assert all(v.dtype == np.float32 for v in flatten_dict(params).values())
    assert_same_state(from_flax_params(params), hf["state"])

    processor = transformers.CLIPProcessor.from_pretrained(tmp_path / "flax")
    batch = processor(
        text=["a photo of a cat"], images=[np.zeros((40, 50, 3), np.uint8)], return_tensors="np"
    )
    assert batch["pixel_values"].shape == (1, 3, 32, 32)  # preprocessor sized for the model


def test_round_trip_torch_flax_tf_torch_is_bit_identical(hf, tmp_path):
    step1 = convert(hf["folders"]["pt"], tmp_path / "flax", formats=("flax",), progress=False)
    step2 = convert(tmp_path / "flax", tmp_path / "tf", formats=("tf",), progress=False)
    step3 = convert(tmp_path / "tf", tmp_path / "pt", formats=("pt",), progress=False)
    assert step1.parameters == step2.parameters == step3.parameters
    back = torch.load(tmp_path / "pt" / "pytorch_model.bin", weights_only=True)
    original = torch.load(os.path.join(hf["folders"]["pt"], "pytorch_model.bin"), weights_only=True)
    original = {k: v for k, v in original.items() if not k.endswith("position_ids")}
    assert set(back) == set(original)
    for name, tensor in original.items():
        assert back[name].dtype == torch.float32
        assert torch.equal(back[name], tensor), name
        assert back[name].numpy().tobytes() == tensor.numpy().tobytes(), name


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_dtype_conversion_matches_torch_casting(hf, tmp_path, dtype, torch_dtype):
    out = tmp_path / dtype
    summary = convert(
        hf["folders"]["safetensors"], out, formats=("safetensors", "pt"), dtype=dtype, progress=False
    )
    assert summary.dtype == torch_dtype
    want = {k: v.to(getattr(torch, torch_dtype)) for k, v in hf["model"].state_dict().items()}
    for filename in ("model.safetensors", "pytorch_model.bin"):
        got = torch.load(out / filename, weights_only=True) if filename.endswith(".bin") else None
        if got is None:
            from safetensors.torch import load_file

            got = load_file(out / filename)
        for name, tensor in got.items():
            assert tensor.dtype == getattr(torch, torch_dtype), name
            assert torch.equal(tensor.view(torch.int16), want[name].view(torch.int16)), name
    loaded = transformers.CLIPModel.from_pretrained(out, dtype="auto")
    assert loaded.dtype == getattr(torch, torch_dtype)
    # and back to fp32 through TF and Flax without losing a bit of the bf16/fp16 values
    convert(out, tmp_path / "flax", formats=("flax",), progress=False)
    convert(tmp_path / "flax", tmp_path / "tf", formats=("tf",), progress=False)
    convert(tmp_path / "tf", tmp_path / "f32", formats=("safetensors",), dtype="fp32", progress=False)
    back = read_all(tmp_path / "f32" / "model.safetensors")
    for name, tensor in want.items():
        if not name.endswith("position_ids"):
            np.testing.assert_array_equal(back[name], tensor.float().numpy(), err_msg=name)


# ---------------------------------------------------------------------------------------------
# OpenAI and open_clip state dicts, against the independent numpy forward pass


def openai_ids_and_pixels():
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 998, (3, 16))
    ids[:, 0] = 998  # <|startoftext|> = vocab - 2
    ids[0, -1] = 999  # <|endoftext|> = vocab - 1, the largest id, where OpenAI pools
    ids[1, 7], ids[1, 8:] = 999, 0  # OpenAI pads with 0
    ids[2, 3], ids[2, 4:] = 999, 0
    pixels = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    return ids, pixels


def normalised(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def check_against_reference(folder, sd):
    ids, pixels = openai_ids_and_pixels()
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels))
    text, image = normalised(encode_text(sd, ids)), normalised(encode_image(sd, pixels))
    np.testing.assert_allclose(out.text_embeds.numpy(), text, atol=2e-6)
    np.testing.assert_allclose(out.image_embeds.numpy(), image, atol=2e-6)
    scale = np.exp(float(sd["logit_scale"]))
    np.testing.assert_allclose(out.logits_per_image.numpy(), scale * image @ text.T, rtol=1e-5, atol=1e-4)


def test_openai_state_dict_converts_and_reproduces_the_reference(tmp_path):
    sd = random_openai_state_dict(seed=1)
    path = tmp_path / "ViT-tiny.pt"
    payload = {k: torch.from_numpy(v) for k, v in sd.items()}
    payload["input_resolution"] = torch.tensor(32)  # as OpenAI's exported state dicts carry
    torch.save(payload, path)
    summary = convert(path, tmp_path / "hf", formats=("all",), progress=False)
    assert summary.source_kind == "openai"
    assert set(os.listdir(tmp_path / "hf")) >= FOLDER_FILES | set(WEIGHT_FILES.values())
    config = transformers.CLIPConfig.from_pretrained(tmp_path / "hf")
    assert (config.text_config.eos_token_id, config.text_config.bos_token_id) == (999, 998)
    assert (config.vision_config.num_attention_heads, config.vision_config.image_size) == (2, 32)
    check_against_reference(tmp_path / "hf", sd)
    for fmt, filename in WEIGHT_FILES.items():  # every format holds the same canonical tensors
        if fmt != "safetensors":
            assert_same_state(
                read_all(tmp_path / "hf" / filename), read_all(tmp_path / "hf" / "model.safetensors")
            )


@pytest.mark.parametrize("container", ["training-checkpoint.pt", "open_clip_model.safetensors"])
def test_open_clip_state_dict_converts_and_reproduces_the_reference(tmp_path, container):
    sd = random_openai_state_dict(seed=2, text_width=128, vision_width=64, layers=(3, 2), embed_dim=32)
    path = tmp_path / container
    if container.endswith(".pt"):  # open_clip training checkpoints: DDP "module." names in a wrapper
        weights = {f"module.{k}": torch.from_numpy(v) for k, v in sd.items()}
        optimizer = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
        torch.save({"epoch": 3, "name": "run", "state_dict": weights, "optimizer": optimizer}, path)
    else:
        from safetensors.numpy import save_file

        save_file(sd | {"logit_scale": sd["logit_scale"].reshape(())}, str(path))
    summary = convert(path, tmp_path / "hf", formats=("safetensors",), progress=False)
    assert summary.source_kind == "openai"
    assert summary.parameters == sum(v.size for v in sd.values())  # split and transposed, none lost
    check_against_reference(tmp_path / "hf", sd)


def test_a_tower_keeps_its_own_tensors_only(hf, tmp_path):
    """A text tower's file that also carries the visual projection: the fit check accepts the other
    tower's tensors (as loading does) and the converted folder holds the text model's alone."""
    from clip_core.weights import write_safetensors

    state = {k: v for k, v in hf["state"].items() if k.startswith("text_model.")}
    source = tmp_path / "src"
    source.mkdir()
    write_safetensors(
        state | {"visual_projection.weight": hf["state"]["visual_projection.weight"]},
        source / "model.safetensors",
    )
    shutil.copyfile(os.path.join(hf["folders"]["safetensors"], "config.json"), source / "config.json")
    summary = convert(source, tmp_path / "out", progress=False)
    assert summary.model_kind == "text" and summary.tensors == len(state)
    assert_same_state(read_all(tmp_path / "out" / "model.safetensors"), state)
    model, info = transformers.CLIPTextModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info


def test_torchscript_archive_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        convert(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Failures: clear errors, no half-written folder, an existing good folder kept


def truncate(path, fraction=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(
    "fmt,message",
    [
        ("safetensors", "truncated"),
        ("pt", "not a readable weights-only PyTorch checkpoint"),
        ("tf", "not a readable HDF5 file"),
        ("flax", "msgpack"),
    ],
)
def test_truncated_files_give_clear_errors_and_leave_nothing(hf, tmp_path, fmt, message):
    source = tmp_path / "src"
    shutil.copytree(hf["folders"][fmt], source)
    truncate(source / WEIGHT_FILES[fmt])
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=message) as info:
        convert(source, out, formats=("all",), progress=False)
    assert WEIGHT_FILES[fmt] in str(info.value)  # the message names the file
    assert not out.exists() and not leftovers(out)


def test_corrupt_and_wrong_model_files_are_named(hf, tmp_path):
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        convert(garbage, tmp_path / "a", progress=False)

    from safetensors.numpy import save_file

    bert = tmp_path / "bert.safetensors"
    save_file({"bert.embeddings.word_embeddings.weight": np.zeros((4, 2), np.float32)}, str(bert))
    with pytest.raises(CheckpointError, match="does not look like a CLIP checkpoint.*bert.embeddings"):
        convert(bert, tmp_path / "b", progress=False)

    # right names, wrong model: a config that does not describe these weights
    other = tmp_path / "other"
    shutil.copytree(hf["folders"]["safetensors"], other)
    config = transformers.CLIPConfig(**NAMED["small"])
    config.vision_config.hidden_size = 64
    config.save_pretrained(other)
    with pytest.raises(
        CheckpointError, match=r"does not fit its config.*vision_model.*\(32,\), model \(64,\)"
    ):
        convert(other, tmp_path / "c", progress=False)
    for name in "abc":
        assert not (tmp_path / name).exists() and not leftovers(tmp_path / name)


def test_failure_midway_keeps_the_existing_folder_and_leaves_no_temporary(hf, tmp_path, monkeypatch):
    import clip_core.formats as formats_module

    out = tmp_path / "out"
    convert(hf["folders"]["safetensors"], out, formats=("safetensors",), progress=False)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(hf["folders"]["pt"], out, progress=False)

    def broken_h5(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(formats_module, "save_h5", broken_h5)
    with pytest.raises(OSError, match="disk full"):  # safetensors and pt written, then tf fails
        convert(hf["folders"]["pt"], out, formats=("all",), overwrite=True, progress=False)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert not leftovers(out)


def test_cli(hf, tmp_path, capsys):
    out = tmp_path / "cli"
    assert convert_main([hf["folders"]["safetensors"], str(out), "--to", "flax", "--dtype", "bf16"]) == 0
    printed = capsys.readouterr().out
    assert "tensors" in printed and "parameters" in printed and "flax" in printed
    assert read_all(out / "flax_model.msgpack")["logit_scale"].dtype.name == "bfloat16"
    assert convert_main([hf["folders"]["safetensors"], str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert (
        convert_main([hf["folders"]["safetensors"], str(out), "--to", "pt", "--overwrite", "--no-progress"])
        == 0
    )
    assert "pytorch_model.bin" in os.listdir(out) and "flax_model.msgpack" not in os.listdir(out)
    missing = tmp_path / "nothing-here"
    assert convert_main([str(missing), str(tmp_path / "x")]) == 1
    assert "clip-convert: error:" in capsys.readouterr().err
