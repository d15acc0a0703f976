"""Checkpoint formats against transformers 4.57.6, which writes the reference files.

The "small" reference checkpoint (tests/conftest.py; plus its text and vision towers) is saved by
transformers in every format: torch (safetensors and pytorch_model.bin), TFCLIP*Model.from_pretrained(from_pt=True)
.save_pretrained, and Flax through transformers' own PyTorch->Flax conversion. Our readers must
return exactly the torch state_dict; our writers' files must load back into transformers with
exactly the same weights.
"""

import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clip_core.formats import open_checkpoint  # noqa: E402
from clip_core.weights import load_state_dict, save_state_dict  # noqa: E402
from tests.tiny_configs import assert_same_state  # noqa: E402

TOWERS = ("clip", "text", "vision")
TORCH_CLASS = {"clip": "CLIPModel", "text": "CLIPTextModel", "vision": "CLIPVisionModel"}


@pytest.fixture(scope="module", autouse=True)
def _restore_env():
    # transformers' TF classes set TF_USE_LEGACY_KERAS=1 at import; keep it out of other modules.
    before = dict(os.environ)
    yield
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update(before)


def numpy_state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def tf_weights(model) -> dict:
    # Keras weight names start with the model name; transformers' loader ignores that component.
    return {w.name.split("/", 1)[1]: w.numpy() for w in model.weights}


def flax_flat(params) -> dict:
    from flax.traverse_util import flatten_dict

    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(dict(params)).items()}


def save_flax_like_transformers(torch_model, folder):
    """transformers' PyTorch->Flax conversion (what from_pt=True runs), without a slow eager init."""
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    flax_class = getattr(transformers, "Flax" + type(torch_model).__name__)
    model = flax_class(torch_model.config, _do_init=False)
    shim = types.SimpleNamespace(params=model.params_shape_tree, base_model_prefix=model.base_model_prefix)
    params = convert_pytorch_state_dict_to_flax(dict(torch_model.state_dict()), shim)
    model.save_pretrained(folder, params=params)
    return model, params


@pytest.fixture(scope="module")
def refs(tmp_path_factory, reference_checkpoint):
    """Per tower: torch numpy state, and folders written by transformers in every format."""
    root = tmp_path_factory.mktemp("refs")
    full = transformers.CLIPModel.from_pretrained(reference_checkpoint("small")).eval()
    out = {}
    for tower in TOWERS:
        model = (
            full
            if tower == "clip"
            else getattr(transformers, TORCH_CLASS[tower]).from_pretrained(out["clip"]["safe"])
        )
        folders = {f: root / f"{tower}_{f}" for f in ("safe", "bin", "tf", "flax")}
        model.save_pretrained(folders["safe"])
        model.save_pretrained(folders["bin"], safe_serialization=False)
        tf_class = getattr(transformers, "TF" + TORCH_CLASS[tower])
        # Keras numbers later models' names (tfclip_model_1) when other test files built one in this
        # process first; the h5 layout test compares names, so start from a clear session.
        from transformers.modeling_tf_utils import keras as hf_keras

        hf_keras.backend.clear_session()
        tf_model = tf_class.from_pretrained(folders["safe"], from_pt=True)
        tf_model.save_pretrained(folders["tf"], safe_serialization=False)
        entry = {"state": numpy_state(model), "torch": model, "tf_weights": tf_weights(tf_model), **folders}
        if tower != "vision":  # Flax: the full model and one tower are enough to pin the layout
            _, params = save_flax_like_transformers(model, folders["flax"])
            entry["flax_params"] = flax_flat(params)
        out[tower] = entry
    return out


# ---------------------------------------------------------------------------------------------
# Readers


@pytest.mark.parametrize(
    "tower, fmt",
    [(t, f) for t in TOWERS for f in ("safe", "bin", "tf", "flax") if (t, f) != ("vision", "flax")],
)
def test_reader_returns_the_torch_state_dict(refs, tower, fmt):
    ref = refs[tower]
    assert_same_state(load_state_dict(ref[fmt]), ref["state"])


def test_reader_finds_files_in_a_folder_in_preference_order(refs, tmp_path):
    ref = refs["clip"]
    # A folder with tf_model.h5 and flax_model.msgpack: h5 wins, and both give the same tensors.
    for name in ("tf_model.h5", "flax_model.msgpack", "config.json"):
        src = ref["tf" if name == "tf_model.h5" else "flax"] / name
        (tmp_path / name).write_bytes(src.read_bytes())
    with open_checkpoint(tmp_path) as reader:
        assert reader.path.endswith("tf_model.h5")
    with open_checkpoint(tmp_path / "flax_model.msgpack") as reader:
        assert reader.path.endswith("flax_model.msgpack")
        assert_same_state(dict(reader), ref["state"])


@pytest.mark.parametrize("fmt", ["safe", "bin", "tf", "flax"])
def test_lazy_reader_info_matches_tensors(refs, fmt):
    with open_checkpoint(refs["clip"][fmt]) as reader:
        assert set(reader.keys()) == set(refs["clip"]["state"])
        for name in reader:
            shape, dtype = reader.info(name)
            array = reader[name]
            assert (shape, np.dtype(dtype)) == (array.shape, array.dtype), name


def test_reads_transformers_sharded_safetensors_and_bin(refs, tmp_path):
    model = refs["clip"]["torch"]
    model.save_pretrained(tmp_path / "safe", max_shard_size="60KB")
    model.save_pretrained(tmp_path / "bin", max_shard_size="60KB", safe_serialization=False)
    assert (tmp_path / "safe" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "bin" / "pytorch_model.bin.index.json").is_file()
    for folder in ("safe", "bin"):
        assert_same_state(load_state_dict(tmp_path / folder), refs["clip"]["state"])


# ---------------------------------------------------------------------------------------------
# Writers: transformers loads what we write


def _copy_config(src, dst):
    os.makedirs(dst, exist_ok=True)
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())


@pytest.mark.parametrize("tower", TOWERS)
def test_torch_loads_our_safetensors_and_bin(refs, tower, tmp_path):
    ref = refs[tower]
    cls = getattr(transformers, TORCH_CLASS[tower])
    for fmt, kwargs in (("safetensors", {}), ("pytorch", {"use_safetensors": False})):
        folder = tmp_path / fmt
        _copy_config(ref["safe"], folder)
        written = save_state_dict(ref["state"], folder, formats=(fmt,))
        assert len(written) == 1 and os.path.isfile(written[0])
        assert_same_state(load_state_dict(written[0]), ref["state"])
        model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
        assert not any(info.values()), info
        assert_same_state(numpy_state(model), ref["state"])


@pytest.mark.parametrize("tower", TOWERS)
def test_tf_loads_our_h5(refs, tower, tmp_path):
    ref = refs[tower]
    _copy_config(ref["safe"], tmp_path)
    save_state_dict(ref["state"], tmp_path, formats=("tf",), model_kind=tower)
    assert_same_state(load_state_dict(tmp_path), ref["state"])
    cls = getattr(transformers, "TF" + TORCH_CLASS[tower])
    model, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert_same_state(tf_weights(model), ref["tf_weights"])


def test_our_h5_has_transformers_structure(refs, tmp_path):
    import h5py

    save_state_dict(refs["clip"]["state"], tmp_path, formats="tf")  # model_kind inferred: clip

    def layout(path):
        with h5py.File(path, "r") as f:
            datasets = []
            f.visititems(
                lambda k, o: datasets.append((k, o.shape, o.dtype)) if isinstance(o, h5py.Dataset) else None
            )
            names = sorted(n.decode() if isinstance(n, bytes) else n for n in f["clip"].attrs["weight_names"])
            return sorted(datasets), names, [str(x) for x in f.attrs["layer_names"]], str(f.attrs["backend"])

    ours = layout(tmp_path / "tf_model.h5")
    theirs = layout(refs["clip"]["tf"] / "tf_model.h5")
    assert ours[0] == theirs[0] and ours[1] == theirs[1]
    assert "clip" in ours[2][0] and "tensorflow" in ours[3]


@pytest.mark.parametrize("tower", ["clip", "text"])
def test_flax_loads_our_msgpack(refs, tower, tmp_path):
    ref = refs[tower]
    _copy_config(ref["safe"], tmp_path)
    save_state_dict(ref["state"], tmp_path, formats=("flax",))
    assert_same_state(load_state_dict(tmp_path), ref["state"])
    cls = getattr(transformers, "Flax" + TORCH_CLASS[tower])
    _, params = cls.from_pretrained(tmp_path, _do_init=False)
    assert_same_state(flax_flat(params), ref["flax_params"])


@pytest.mark.parametrize("chunk_size", [None, 1000])
def test_our_msgpack_is_byte_identical_to_flax_serialization(refs, tmp_path, monkeypatch, chunk_size):
    # flax.serialization encodes maps in the tree's key order; from_pretrained(from_pt=True) trees
    # are key-sorted, and so are ours. Same tree, same order -> the same bytes. With a small chunk
    # size (flax's is 1 GiB), most arrays are written in flax's chunked layout, piece by piece.
    from flax import serialization
    from flax.traverse_util import unflatten_dict

    from clip_core.formats import msgpack_format

    if chunk_size is not None:
        monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", chunk_size)
        monkeypatch.setattr(msgpack_format, "MAX_CHUNK_SIZE", chunk_size)

    flat = refs["clip"]["flax_params"]
    tree = unflatten_dict({tuple(k.split("/")): flat[k] for k in sorted(flat)})

    def sort_tree(node):
        return {k: sort_tree(node[k]) for k in sorted(node)} if isinstance(node, dict) else node

    save_state_dict(refs["clip"]["state"], tmp_path, formats="flax")
    ours = (tmp_path / "flax_model.msgpack").read_bytes()
    if chunk_size is not None:
        assert ours.count(b"__msgpack_chunked_array__") > 10
    assert ours == serialization.msgpack_serialize(sort_tree(tree))
    assert_same_state(flax_flat(serialization.msgpack_restore(ours)), flat)
    assert_same_state(load_state_dict(tmp_path), refs["clip"]["state"])


def test_streaming_conversion_from_a_lazy_reader(refs, tmp_path):
    with open_checkpoint(refs["clip"]["tf"]) as reader:
        save_state_dict(reader, tmp_path, formats=("safetensors", "flax"))
    assert_same_state(load_state_dict(tmp_path / "model.safetensors"), refs["clip"]["state"])
    assert_same_state(load_state_dict(tmp_path / "flax_model.msgpack"), refs["clip"]["state"])
