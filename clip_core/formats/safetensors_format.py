"""model.safetensors, single or sharded: canonical names, torch layout, any dtype (bf16 too).

Reading goes through the safetensors library (memory-mapped, one tensor at a time). Writing is
done here, tensor by tensor, so that a lazy source is never held in memory twice; the format is
an 8-byte little-endian header length, a JSON header (dtype, shape, byte offsets) padded to 8
bytes, then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

from clip_core.files import atomic_path
from clip_core.formats.base import (
    CheckpointReader,
    ShardedReader,
    nbytes,
    parameter_names,
    save_maybe_sharded,
    tensor_info,
)
from clip_core.names import CheckpointError

FILENAME = "model.safetensors"

_DTYPE_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
_DTYPE_NAMES = {code: name for name, code in _DTYPE_CODES.items()}


class SafetensorsReader(CheckpointReader):
    def __init__(self, path: str):
        super().__init__(path)
        from safetensors import safe_open

        try:
            self._file = safe_open(path, framework="np")
            self._names = {name: None for name in self._file.keys()}
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None

    def keys(self):
        return self._names.keys()

    def info(self, name):
        from clip_core.formats.base import extended_dtype

        tensor_slice = self._file.get_slice(name)
        return tuple(tensor_slice.get_shape()), extended_dtype(_DTYPE_NAMES[tensor_slice.get_dtype()])

    def get_tensor(self, name):
        return self._file.get_tensor(name)

    def close(self):
        self._file = None


def open_safetensors(path: str) -> CheckpointReader:
    """A single file, or a ``*.safetensors.index.json`` of shards."""
    if path.endswith(".index.json"):
        return ShardedReader(path, SafetensorsReader)
    return SafetensorsReader(path)


def _header(state: Mapping, names: list[str], metadata: dict[str, str]) -> tuple[bytes, list[str]]:
    # Larger items first keeps every tensor aligned to its itemsize, as the reference writer does.
    infos = {name: tensor_info(state, name) for name in names}
    order = sorted(names, key=lambda n: (-np.dtype(infos[n][1]).itemsize, n))
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name in order:
        shape, dtype = infos[name]
        if np.dtype(dtype).name not in _DTYPE_CODES:
            raise ValueError(f"{name}: dtype {np.dtype(dtype)} cannot be stored in safetensors")
        size = nbytes(shape, dtype)
        header[name] = {
            "dtype": _DTYPE_CODES[np.dtype(dtype).name],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    """The tensor's bytes as a view (no copy: a large tensor is not held twice while written)."""
    if array.dtype.byteorder == ">":  # safetensors is little-endian; big-endian input is rare
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(np.asarray(array, order="C").reshape(-1).view(np.uint8))


def write_safetensors_file(
    state: Mapping, path: str, names: list[str] | None = None, metadata: dict[str, str] | None = None
) -> str:
    """Write ``names`` (default: all parameters) of ``state`` to ``path`` atomically."""
    names = parameter_names(state) if names is None else names
    header, order = _header(state, names, metadata or {"format": "pt"})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        for name in order:
            f.write(_little_endian_bytes(np.asarray(state[name])))
    return path


def save_safetensors(state: Mapping, folder: str, max_shard_size: int | None = None) -> list[str]:
    """model.safetensors, or shards plus model.safetensors.index.json when over ``max_shard_size``."""
    return save_maybe_sharded(state, folder, FILENAME, write_safetensors_file, max_shard_size)
