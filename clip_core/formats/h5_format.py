"""transformers' tf_model.h5 (Keras 2 HDF5 weights), read and written with h5py, a tensor at a time.

Layout written by ``TFCLIPModel.save_pretrained(safe_serialization=False)``:
root attributes ``layer_names`` (the model's top layers: ``[b"clip"]``), ``backend``,
``keras_version``; a group per layer whose ``weight_names`` attribute lists its weights as
``<model name>/clip/<TF weight name>`` (model name ``tfclip_model``, ``tfclip_text_model`` or
``tfclip_vision_model``), each stored as a dataset at ``clip/<that name>``; and an empty
``top_level_model_weights`` group. transformers' loader reads ``layer_names``, then each
layer's ``weight_names`` minus their first component, so both attributes are required.

bf16 has no HDF5 predefined type: it is stored as a 16-bit IEEE-style float type (sign bit 15,
8 exponent bits at 7, 7 mantissa bits, bias 127) that h5py and transformers read as float32
values, and that this reader reads back bit for bit.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np

from clip_core.files import atomic_path
from clip_core.formats.base import (
    CheckpointReader,
    extended_dtype,
    is_bfloat16,
    nbytes,
    open_maybe_sharded,
    reports_errors,
    tensor_info,
)
from clip_core.layouts import (
    canonical_name_from_tf,
    from_tf_layout,
    param_kind,
    shape_from_channels_last,
    tf_weight_name,
    to_tf_layout,
)
from clip_core.names import MODEL_KINDS, CheckpointError, parameter_names

FILENAME = "tf_model.h5"
MAIN_LAYER = "clip"
KERAS_VERSION = "2.21.0"  # the tf-keras whose legacy h5 weights format this mirrors
HDF5_OBJECT_HEADER_LIMIT = 64512  # bytes per attribute, as Keras splits long attribute lists

TF_MODEL_NAMES = {kind.name: kind.tf_model_name for kind in MODEL_KINDS.values()}
MAX_EXPANSION = 64  # a compressed dataset may hold at most this many times the file's size

_BF16_FIELDS = (15, 7, 8, 0, 7)  # sign position, exponent position/size, mantissa position/size


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CheckpointError("reading or writing tf_model.h5 needs h5py (pip install h5py)") from None
    return h5py


def _bfloat16_h5_type():
    h5py = _h5py()
    tid = h5py.h5t.IEEE_F32LE.copy()
    tid.set_fields(*_BF16_FIELDS)
    tid.set_ebias(127)
    tid.set_offset(0)
    tid.set_precision(16)
    tid.set_size(2)
    return tid


def _is_bfloat16_h5(dataset) -> bool:
    h5py = _h5py()
    tid = dataset.id.get_type()
    return (
        tid.get_class() == h5py.h5t.FLOAT
        and tid.get_size() == 2
        and tuple(tid.get_fields()) == _BF16_FIELDS
        and tid.get_ebias() == 127
    )


class H5Reader(CheckpointReader):
    """Every dataset of the file, found by walking it, keyed by its canonical name.

    Walking the datasets (rather than following ``weight_names``) reads transformers' single
    files and its ``tf_model-0000k-of-0000n.h5`` shards alike, whatever the Keras prefixes.

    Datasets must hold numbers, in the file itself: external raw data (which could point at any file
    on the machine), virtual datasets and filtered datasets that would expand past
    ``MAX_EXPANSION`` x the file's size are refused before they are read.
    """

    canonical_name = staticmethod(canonical_name_from_tf)

    def __init__(self, path: str):
        super().__init__(path)
        h5py = _h5py()
        try:
            self._file = h5py.File(path, "r")
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable HDF5 file: {e}") from None
        try:
            datasets: list[str] = []
            self._file.visititems(
                lambda key, obj: datasets.append(key) if isinstance(obj, h5py.Dataset) else None
            )
            self._datasets: dict[str, str] = {}
            for key in datasets:
                name = canonical_name_from_tf(key)
                if name in self._datasets:
                    raise CheckpointError(f"{path}: {self._datasets[name]} and {key} both map to {name}")
                self._datasets[name] = key
        except Exception as e:
            self._file.close()
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path} is not a readable HDF5 file: {type(e).__name__}: {e}") from None

    def keys(self):
        return self._datasets.keys()

    def _dataset(self, name):
        dataset = self._file[self._datasets[name]]
        if dataset.external or dataset.is_virtual:
            raise CheckpointError(f"{self.path}: {name} keeps its data outside the file; refused")
        if not (_is_bfloat16_h5(dataset) or dataset.dtype.kind in "biuf"):
            raise CheckpointError(f"{self.path}: {name} holds {dataset.dtype}, not numbers")
        if dataset.compression or dataset.chunks:
            limit = MAX_EXPANSION * os.path.getsize(self.path) + 2**20
            if nbytes(dataset.shape, dataset.dtype) > limit:
                raise CheckpointError(
                    f"{self.path}: {name} would expand to {nbytes(dataset.shape, dataset.dtype):,} bytes "
                    f"from a {os.path.getsize(self.path):,}-byte file; refused"
                )
        return dataset

    @reports_errors
    def info(self, name):
        dataset = self._dataset(name)
        dtype = extended_dtype("bfloat16") if _is_bfloat16_h5(dataset) else dataset.dtype
        shape = () if param_kind(name) == "scalar" else shape_from_channels_last(name, dataset.shape)
        return shape, dtype

    def get_tensor(self, name):
        dataset = self._dataset(name)
        if _is_bfloat16_h5(dataset):
            h5py = _h5py()
            bits = np.empty(dataset.shape, np.uint16)
            dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, bits, mtype=dataset.id.get_type())
            array = bits.view(extended_dtype("bfloat16"))
        else:
            array = dataset[()]
        return from_tf_layout(name, np.asarray(array))

    def close(self):
        self._file.close()


def open_h5(path: str) -> CheckpointReader:
    """A single file, or a ``tf_model.h5.index.json`` of transformers' shards."""
    return open_maybe_sharded(path, H5Reader)


def _save_attribute_list(group, name: str, values: list[str]) -> None:
    """Keras' convention: split a string list over ``name0``, ``name1``... when it is too long."""
    data = np.array([v.encode("utf8") for v in values])
    chunks = 1
    while any(c.nbytes > HDF5_OBJECT_HEADER_LIMIT for c in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
    else:
        for i, chunk in enumerate(np.array_split(data, chunks)):
            group.attrs[f"{name}{i}"] = chunk


def _write_dataset(group, path: str, array: np.ndarray) -> None:
    if is_bfloat16(array.dtype):
        h5py = _h5py()
        parent_path, _, leaf = path.rpartition("/")
        parent = group.require_group(parent_path) if parent_path else group
        tid = _bfloat16_h5_type()
        space = h5py.h5s.create_simple(array.shape) if array.ndim else h5py.h5s.create(h5py.h5s.SCALAR)
        dataset = h5py.h5d.create(parent.id, leaf.encode("utf8"), tid, space)
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.asarray(array, order="C").view(np.uint16), mtype=tid)
    else:
        group.create_dataset(path, data=array)


class _LatchingFile(io.RawIOBase):
    """The file HDF5 writes through (h5py's file-object driver) that never reports a write error.

    libhdf5 does not recover from a failed write: after ENOSPC its metadata cache keeps failing,
    and the process may crash at exit. So the first OSError is kept (``error``), later writes are
    skipped, HDF5 finishes normally, and the writer raises the kept error once the file is closed."""

    def __init__(self, f):
        super().__init__()
        self._f = f
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer) -> int:
        return self._f.readinto(buffer)

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                self._f.write(data)
                return size
            except OSError as e:
                self.error = e
        self._f.seek(size, 1)
        return size

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._f.truncate(size)
            except OSError as e:
                self.error = e
        return self.tell() if size is None else size

    def flush(self) -> None:
        if self.error is None:
            try:
                self._f.flush()
            except OSError as e:
                self.error = e


def save_h5(state: Mapping, folder: str, model_kind: str = "clip") -> list[str]:
    """tf_model.h5 that transformers' TFCLIPModel / TFCLIPTextModel / TFCLIPVisionModel loads.

    A write error (a full disk) is an OSError naming the file, raised after HDF5 has closed it."""
    if model_kind not in TF_MODEL_NAMES:
        raise ValueError(f"model_kind must be one of {tuple(TF_MODEL_NAMES)}, got {model_kind!r}")
    h5py = _h5py()
    prefix = f"{TF_MODEL_NAMES[model_kind]}/{MAIN_LAYER}/"
    names = parameter_names(state)
    for name in names:
        tensor_info(state, name)  # fail on a bad entry before creating the file
    path = os.path.join(folder, FILENAME)
    with atomic_path(path) as tmp, open(tmp, "w+b") as raw:
        sink = _LatchingFile(raw)
        try:
            with h5py.File(sink, "w") as f:
                _save_attribute_list(f, "layer_names", [MAIN_LAYER])
                f.attrs["backend"] = b"tensorflow"
                f.attrs["keras_version"] = KERAS_VERSION.encode("utf8")
                layer = f.create_group(MAIN_LAYER)
                weight_names = []
                for name in names:
                    if sink.error is not None:
                        break  # the disk is full: stop writing, let HDF5 close cleanly
                    weight_name = prefix + tf_weight_name(name)
                    _write_dataset(layer, weight_name, to_tf_layout(name, np.asarray(state[name])))
                    weight_names.append(weight_name)
                _save_attribute_list(layer, "weight_names", weight_names)
                f.create_group("top_level_model_weights").attrs["weight_names"] = np.array(
                    [], dtype=np.float64
                )
        except Exception:
            if sink.error is None:
                raise  # a failure of its own, not of the disk
        if sink.error is not None:
            raise sink.error
        raw.flush()
    return [os.path.abspath(path)]
