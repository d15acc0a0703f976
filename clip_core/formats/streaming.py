"""Reading and writing checkpoints one tensor at a time, for converting models larger than memory.

The general readers and writers in this package are already lazy on the way in; three places
would still hold more than one tensor's worth of memory, and are done here instead:

- ``StreamingSafetensorsReader`` reads each tensor with ``readinto`` rather than through a memory
  map: pages of a mapped file stay in the process (and count in its RSS) once touched, so
  converting a mapped 1.6 GB file looks like a 1.6 GB process.
- ``write_torch_bin_streaming`` writes ``pytorch_model.bin`` in torch's zip format record by
  record: ``torch.save`` needs every tensor in memory at once. The pickle (``data.pkl``) refers to
  storages by key, exactly as ``torch.save`` writes it, so ``torch.load(weights_only=True)``, its
  ``mmap=True`` mode and transformers read the file unchanged.
- ``write_msgpack_streaming`` writes ``flax_model.msgpack`` with each array's bytes going straight
  from the array to the file (the general writer builds three intermediate copies per array).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
from collections.abc import Mapping

import numpy as np

from clip_core.files import atomic_path
from clip_core.formats.base import (
    CheckpointReader,
    extended_dtype,
    nbytes,
    parameter_names,
    tensor_info,
)
from clip_core.formats.torch_format import TorchBinReader, tensor_to_numpy
from clip_core.layouts import to_channels_last
from clip_core.names import CheckpointError

# ---------------------------------------------------------------------------------------------
# safetensors, read without a memory map

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit


class StreamingSafetensorsReader(CheckpointReader):
    """A safetensors file read tensor by tensor with plain reads; the header is checked on open
    (offsets inside the file, sizes matching shapes), so truncation is reported before any work."""

    def __init__(self, path: str):
        super().__init__(path)
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._entries = self._read_header()
        except Exception:
            self._file.close()
            raise

    def _read_header(self) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
        size = os.fstat(self._file.fileno()).st_size
        head = self._file.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{self.path} is not a safetensors file: only {size} bytes")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            raise CheckpointError(
                f"{self.path} is not a valid safetensors file (header length {length}, file size {size}): "
                "corrupt or truncated"
            )
        try:
            header = json.loads(self._file.read(length))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except ValueError as e:
            raise CheckpointError(f"{self.path} has a corrupt safetensors header: {e}") from None
        header.pop("__metadata__", None)
        start = 8 + length
        entries = {}
        for name, entry in header.items():
            try:
                dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                shape = tuple(int(d) for d in entry["shape"])
                begin, end = (int(o) for o in entry["data_offsets"])
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{self.path}: corrupt header entry for {name}: {e!r}") from None
            if end - begin != nbytes(shape, extended_dtype(dtype)) or begin < 0:
                raise CheckpointError(
                    f"{self.path}: {name} has offsets {begin}..{end} that do not fit {shape}"
                )
            if start + end > size:
                raise CheckpointError(
                    f"{self.path} is truncated: tensor {name} needs bytes up to {start + end}, "
                    f"the file has {size}"
                )
            entries[name] = (dtype, shape, start + begin, end - begin)
        return entries

    def keys(self):
        return self._entries.keys()

    def info(self, name):
        dtype, shape, _, _ = self._entries[name]
        return shape, extended_dtype(dtype)

    def get_tensor(self, name):
        dtype, shape, offset, size = self._entries[name]
        array = np.empty(shape, extended_dtype(dtype))
        self._file.seek(offset)
        view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        got = self._file.readinto(view) if array.size else 0
        if got != size:
            raise CheckpointError(f"{self.path}: {name} ends early ({got} of {size} bytes): truncated")
        if array.dtype.byteorder == ">":
            array = array.byteswap().view(array.dtype.newbyteorder())
        return array

    def close(self):
        self._file.close()


def open_safetensors_streaming(path: str) -> CheckpointReader:
    if path.endswith(".index.json"):
        from clip_core.formats.base import ShardedReader

        return ShardedReader(path, StreamingSafetensorsReader)
    return StreamingSafetensorsReader(path)


# ---------------------------------------------------------------------------------------------
# pytorch_model.bin read through torch.load(mmap=True), its pages given back after each tensor


def _release_mapped(address: int, size: int) -> None:
    """madvise(MADV_DONTNEED) over the pages holding ``[address, address + size)`` of a file mapping."""
    import ctypes
    import mmap

    if not size or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first = address - address % mmap.PAGESIZE
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(address + size - first), mmap.MADV_DONTNEED)
    except (OSError, AttributeError):
        pass


class StreamingTorchBinReader(TorchBinReader):
    """TorchBinReader that releases each tensor's memory-mapped pages once it has been copied out.

    Only storages backed by the file (``torch.load(mmap=True)``) are released: for those the pages
    are re-read from the file if touched again, whereas anonymous memory would be zeroed.
    """

    def get_tensor(self, name):
        tensor = self._state[name]
        array = tensor_to_numpy(tensor)
        if getattr(self, "mmapped", False):
            storage = tensor.untyped_storage()
            _release_mapped(storage.data_ptr(), storage.nbytes())
        return array


def open_torch_bin_streaming(path: str) -> CheckpointReader:
    if path.endswith(".index.json"):
        from clip_core.formats.base import ShardedReader

        return ShardedReader(path, StreamingTorchBinReader)
    return StreamingTorchBinReader(path)


# ---------------------------------------------------------------------------------------------
# pytorch_model.bin in torch's zip format, one record per tensor

_TORCH_STORAGES = {
    "float64": "DoubleStorage",
    "float32": "FloatStorage",
    "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


class _StorageRef:
    def __init__(self, key: str, storage_type, numel: int):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _TensorRef:
    """Pickles as torch.save pickles a contiguous CPU tensor: ``_rebuild_tensor_v2(storage, ...)``."""

    def __init__(self, storage: _StorageRef, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        import torch._utils

        stride, step = [], 1
        for d in reversed(self.shape):
            stride.append(step)
            step *= d
        args = (self.storage, 0, tuple(self.shape), tuple(reversed(stride)), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def write_torch_bin_streaming(state: Mapping, path: str, names: list[str] | None = None) -> str:
    """``pytorch_model.bin`` (atomically) holding ``names`` of ``state``, one tensor in memory at a time."""
    try:
        import torch
    except ImportError:
        raise CheckpointError("writing pytorch_model.bin needs PyTorch (pip install torch)") from None
    names = parameter_names(state) if names is None else names
    refs, infos = {}, {}
    for i, name in enumerate(names):
        shape, dtype = tensor_info(state, name)
        dtype_name = np.dtype(dtype).name
        if dtype_name not in _TORCH_STORAGES:
            raise ValueError(f"{name}: dtype {dtype_name} cannot be stored in pytorch_model.bin")
        storage = _StorageRef(str(i), getattr(torch, _TORCH_STORAGES[dtype_name]), int(np.prod(shape)))
        refs[name] = _TensorRef(storage, tuple(shape))
        infos[name] = (tuple(shape), np.dtype(dtype))
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(refs)
    data_pkl = buffer.getvalue()
    with atomic_path(path) as tmp:
        writer = torch._C.PyTorchFileWriter(tmp)
        writer.write_record("data.pkl", data_pkl, len(data_pkl))
        writer.write_record(".format_version", "1", 1)
        writer.write_record("byteorder", "little", len("little"))
        for name in names:
            key = refs[name].storage.key
            array = np.asarray(state[name], order="C")
            if (tuple(array.shape), array.dtype) != infos[name]:
                raise CheckpointError(f"{name}: got {array.shape} {array.dtype}, announced {infos[name]}")
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            # A byte view of the array as a torch storage: no copy.
            storage = torch.from_numpy(array.reshape(-1).view(np.uint8)).untyped_storage()
            writer.write_record(f"data/{key}", storage, array.nbytes)
            del array, storage
        writer.write_end_of_file()
        del writer
    return path


def save_torch_bin_streaming(state: Mapping, folder: str) -> list[str]:
    path = os.path.join(folder, "pytorch_model.bin")
    return [os.path.abspath(write_torch_bin_streaming(state, path))]


# ---------------------------------------------------------------------------------------------
# flax_model.msgpack with no intermediate copies of the arrays


def _bin_header(n: int) -> bytes:
    if n < 2**8:
        return b"\xc4" + struct.pack(">B", n)
    if n < 2**16:
        return b"\xc5" + struct.pack(">H", n)
    return b"\xc6" + struct.pack(">I", n)


_FIXEXT = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}


def _ext_header(code: int, n: int) -> bytes:
    if n in _FIXEXT:
        return _FIXEXT[n] + struct.pack(">b", code)
    if n < 2**8:
        return b"\xc7" + struct.pack(">Bb", n, code)
    if n < 2**16:
        return b"\xc8" + struct.pack(">Hb", n, code)
    return b"\xc9" + struct.pack(">Ib", n, code)


def _write_array(f, packer, array: np.ndarray) -> None:
    """One ExtType(1, packb((shape, dtype name, raw bytes))) as flax.serialization writes it."""
    from clip_core.formats.msgpack_format import EXT_NDARRAY, MAX_CHUNK_SIZE, _pack_leaf

    array = np.asarray(array, order="C")
    if array.nbytes > MAX_CHUNK_SIZE:  # > 1 GiB: flax's chunked layout (rare; not streamed)
        f.write(_pack_leaf(packer, array))
        return
    head = b"\x93" + packer.pack(list(array.shape)) + packer.pack(array.dtype.name)
    head += _bin_header(array.nbytes)
    f.write(_ext_header(EXT_NDARRAY, len(head) + array.nbytes) + head)
    if array.nbytes:
        f.write(memoryview(array.reshape(-1).view(np.uint8)))


def write_msgpack_streaming(state: Mapping, path: str, names: list[str] | None = None) -> str:
    from clip_core.formats.msgpack_format import _msgpack, _tree_of_names

    msgpack = _msgpack()
    names = parameter_names(state) if names is None else names
    for name in names:
        tensor_info(state, name)
    tree = _tree_of_names(names)
    # Tuples are packed as arrays, as flax packs shapes; strict_types would refuse them.
    packer = msgpack.Packer(use_bin_type=True)

    def write_tree(f, node):
        f.write(packer.pack_map_header(len(node)))
        for key in sorted(node):
            f.write(packer.pack(key))
            value = node[key]
            if isinstance(value, dict):
                write_tree(f, value)
            else:
                _write_array(f, packer, to_channels_last(value, np.asarray(state[value])))

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write_tree(f, tree)
    return path


def save_msgpack_streaming(state: Mapping, folder: str) -> list[str]:
    path = os.path.join(folder, "flax_model.msgpack")
    return [os.path.abspath(write_msgpack_streaming(state, path))]
