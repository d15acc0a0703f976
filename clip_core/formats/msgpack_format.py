"""transformers' flax_model.msgpack, in flax.serialization's layout, with the msgpack package only.

The file is one msgpack map: the Flax params tree (no ``params`` wrapper), keys sorted, layer
indices as string keys. Each array is an ExtType of code 1 whose payload is itself msgpack:
``(shape, dtype name, C-order bytes)`` (code 3 is the same for numpy scalars). Arrays over 1 GiB
are stored as a map ``{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}`` of
flat pieces, as flax does to stay under msgpack's 2 GiB object limit.

The reader indexes the byte range of every leaf in one pass over the map structure (skipping array
payloads), then decodes one leaf at a time from a memory map, giving the mapped pages back once a
leaf is copied out. The writer streams: each array's bytes go from the array to the file with no
packed copy, chunked pieces included; its files are byte-identical to flax.serialization's.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping

import numpy as np

from clip_core.files import atomic_path
from clip_core.formats.base import (
    CheckpointReader,
    extended_dtype,
    little_endian_bytes,
    open_maybe_sharded,
    reports_errors,
    tensor_info,
)
from clip_core.layouts import (
    canonical_name_from_flax,
    flax_path,
    from_channels_last,
    shape_from_channels_last,
    to_channels_last,
)
from clip_core.names import CheckpointError, parameter_names

FILENAME = "flax_model.msgpack"
EXT_NDARRAY, EXT_NPSCALAR = 1, 3
CHUNKED = "__msgpack_chunked_array__"
MAX_CHUNK_SIZE = 2**30  # flax's limit per array piece

_MAP_MARKERS = set(range(0x80, 0x90)) | {0xDE, 0xDF}
_FIXEXT_SIZES = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_EXT_LENGTH_BYTES = {0xC7: 1, 0xC8: 2, 0xC9: 4}


def _msgpack():
    try:
        import msgpack
    except ImportError:
        raise CheckpointError(
            "reading or writing flax_model.msgpack needs msgpack (pip install msgpack)"
        ) from None
    return msgpack


# ---------------------------------------------------------------------------------------------
# Ext payloads -> arrays


def _array_from_payload(payload) -> np.ndarray:
    shape, dtype_name, buffer = _msgpack().unpackb(payload, raw=True)
    dtype = extended_dtype(dtype_name.decode("ascii"))
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()


def _ext_hook(code: int, payload: bytes):
    if code == EXT_NDARRAY:
        return _array_from_payload(payload)
    if code == EXT_NPSCALAR:
        return _array_from_payload(payload)[()]
    raise CheckpointError(f"unexpected msgpack extension type {code}")


def _unchunk(leaf: dict) -> np.ndarray:
    shape = tuple(leaf["shape"][str(i)] for i in range(len(leaf["shape"])))
    pieces = [leaf["chunks"][str(i)] for i in range(len(leaf["chunks"]))]
    return np.concatenate(pieces).reshape(shape)


def _ext_payload_range(buf, start: int) -> tuple[int, int, int]:
    """(ext code, payload start, payload end) of the ext object at ``buf[start]``."""
    marker = buf[start]
    if marker in _FIXEXT_SIZES:
        return buf[start + 1], start + 2, start + 2 + _FIXEXT_SIZES[marker]
    if marker in _EXT_LENGTH_BYTES:
        width = _EXT_LENGTH_BYTES[marker]
        length = int.from_bytes(buf[start + 1 : start + 1 + width], "big")
        code_at = start + 1 + width
        return buf[code_at], code_at + 1, code_at + 1 + length
    raise CheckpointError(f"byte {start}: expected an array, found msgpack type 0x{marker:02x}")


# ---------------------------------------------------------------------------------------------
# Reading


def _canonical_name(path: tuple[str, ...]) -> str:
    if path and path[0] == "params" and len(path) > 1:
        path = path[1:]  # a tree saved with its ``params`` wrapper
    return canonical_name_from_flax(path)


class MsgpackReader(CheckpointReader):
    @staticmethod
    def canonical_name(stored: str) -> str:
        """A shard index's key ("text_model/.../kernel") -> canonical name."""
        return _canonical_name(tuple(stored.split("/")))

    def __init__(self, path: str):
        super().__init__(path)
        msgpack = _msgpack()
        self._leaves: dict[str, tuple[int, int]] = {}
        self._buf = None
        try:
            with open(path, "rb") as f:
                self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            size = len(self._buf)
            unpacker = msgpack.Unpacker(
                _MemoryFile(self._buf), raw=False, strict_map_key=False, max_buffer_size=max(size, 1 << 20)
            )
            self._index_map(unpacker, unpacker.read_map_header(), ())
            if unpacker.tell() != size:
                raise CheckpointError(f"{path} has {size - unpacker.tell()} bytes after its map: corrupt")
        except Exception as e:
            if self._buf is not None:
                self._buf.close()
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(
                f"{path} is not a readable flax msgpack file: {type(e).__name__}: {e}"
            ) from None

    def _index_map(self, unpacker, entries: int, path: tuple[str, ...], first_key=None) -> None:
        for i in range(entries):
            key = first_key if (i == 0 and first_key is not None) else unpacker.unpack()
            start = unpacker.tell()
            if start >= len(self._buf):
                raise CheckpointError(f"{self.path} ends early (truncated?) inside {'/'.join(path)}")
            if self._buf[start] in _MAP_MARKERS:
                inner = unpacker.read_map_header()
                inner_first = unpacker.unpack() if inner else None
                if inner_first == CHUNKED:
                    for _ in range(2 * inner - 1):
                        unpacker.skip()
                    self._add_leaf(path + (str(key),), start, unpacker.tell())
                else:
                    self._index_map(unpacker, inner, path + (str(key),), inner_first)
            else:
                unpacker.skip()
                self._add_leaf(path + (str(key),), start, unpacker.tell())

    def _add_leaf(self, path: tuple[str, ...], start: int, end: int) -> None:
        name = _canonical_name(path)
        if name in self._leaves:
            raise CheckpointError(f"{self.path}: two entries map to the tensor {name} ({'/'.join(path)})")
        self._leaves[name] = (start, end)

    def keys(self):
        return self._leaves.keys()

    def _raw_leaf(self, name: str):
        start, end = self._leaves[name]
        return _msgpack().unpackb(self._buf[start:end], ext_hook=_ext_hook, raw=False, strict_map_key=False)

    @reports_errors
    def info(self, name):
        start, end = self._leaves[name]
        if self._buf[start] in _MAP_MARKERS:  # chunked: rare (> 1 GiB); decode it
            array = self.get_tensor(name)
            return tuple(array.shape), array.dtype
        code, payload_start, payload_end = _ext_payload_range(self._buf, start)
        # The payload starts with the shape and dtype name; the bytes follow. Read only the head.
        head = _msgpack().Unpacker(raw=True)
        head.feed(self._buf[payload_start : min(payload_end, payload_start + 4096)])
        head.read_array_header()
        shape, dtype_name = tuple(head.unpack()), head.unpack().decode("ascii")
        return shape_from_channels_last(name, shape), extended_dtype(dtype_name)

    def get_tensor(self, name):
        try:
            return self._get_tensor(name)
        finally:
            start, end = self._leaves[name]
            _release_pages(self._buf, start, end)  # decoded into a copy: the mapped pages can go

    def _get_tensor(self, name):
        array = self._read_plain_array(name)
        if array is not None:
            return from_channels_last(name, array)
        leaf = self._raw_leaf(name)
        if isinstance(leaf, dict) and leaf.get(CHUNKED):
            leaf = _unchunk(leaf)
        if not isinstance(leaf, np.ndarray | np.generic):
            raise CheckpointError(f"{self.path}: {name} is not an array but {type(leaf).__name__}")
        return from_channels_last(name, np.asarray(leaf))

    def _read_plain_array(self, name):
        """An ndarray leaf copied straight out of the map (one copy), or None for other leaves."""
        start, end = self._leaves[name]
        if self._buf[start] in _MAP_MARKERS:
            return None
        code, payload_start, payload_end = _ext_payload_range(self._buf, start)
        if code != EXT_NDARRAY or payload_end > len(self._buf):
            return None
        head = _msgpack().Unpacker(raw=True)
        head.feed(self._buf[payload_start : min(payload_end, payload_start + 4096)])
        try:
            if head.read_array_header() != 3:
                return None
            shape, dtype = tuple(head.unpack()), extended_dtype(head.unpack().decode("ascii"))
        except Exception:
            return None
        at = payload_start + head.tell()
        width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(self._buf[at])
        if width is None:
            return None
        size = int.from_bytes(self._buf[at + 1 : at + 1 + width], "big")
        data_start = at + 1 + width
        count = int(np.prod(shape, dtype=np.int64))
        if size != count * dtype.itemsize or data_start + size > payload_end:
            raise CheckpointError(f"{self.path}: {name} holds {size} bytes, not {shape} {dtype}")
        view = np.frombuffer(self._buf, dtype=dtype, count=count, offset=data_start)
        array = view.reshape(shape).copy()
        del view
        return array

    def close(self):
        self._buf.close()


def open_msgpack(path: str) -> CheckpointReader:
    """A single file, or a ``flax_model.msgpack.index.json`` of transformers' shards."""
    return open_maybe_sharded(path, MsgpackReader)


def _release_pages(buf, start: int, end: int) -> None:
    """Drop the mapped pages of ``buf[start:end]`` from this process (the file is untouched).

    Pages of a memory-mapped file stay resident, and count in the process's RSS, once read; a
    reader that has copied what it needs gives them back so that reading a large checkpoint
    does not look like holding all of it.
    """
    if not hasattr(mmap, "MADV_DONTNEED") or not isinstance(buf, mmap.mmap):
        return
    first = start - start % mmap.PAGESIZE
    if end > first:
        try:
            buf.madvise(mmap.MADV_DONTNEED, first, min(end, len(buf)) - first)
        except (OSError, ValueError):
            pass


class _MemoryFile:
    """A file-like view of a memory map, so msgpack's Unpacker streams it without a copy.

    Pages already handed to the Unpacker are released as it goes (it keeps its own copy)."""

    def __init__(self, buf):
        self._buf, self._pos, self._released = buf, 0, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._buf) if n is None or n < 0 else min(len(self._buf), self._pos + n)
        data = self._buf[self._pos : end]
        self._pos = end
        if end - self._released >= 64 * 2**20:
            _release_pages(self._buf, self._released, end)
            self._released = end - end % mmap.PAGESIZE
        return data


# ---------------------------------------------------------------------------------------------
# Writing: each array's bytes go straight from the array to the file (no packed copies)


def _tree_of_names(names: list[str]) -> dict:
    """Nested dict of Flax path components -> canonical name at the leaves."""
    tree: dict = {}
    for name in names:
        *parents, leaf = flax_path(name)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{name} collides with another tensor's Flax path")
        node[leaf] = name
    return tree


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


def _write_ndarray(f, packer, array: np.ndarray) -> None:
    """ExtType(1, packb((shape, dtype name, bytes))), as flax.serialization writes an array."""
    data = little_endian_bytes(array)
    head = b"\x93" + packer.pack(list(array.shape)) + packer.pack(array.dtype.name) + _bin_header(data.nbytes)
    f.write(_ext_header(EXT_NDARRAY, len(head) + data.nbytes) + head)
    f.write(data)


def _write_leaf(f, packer, array: np.ndarray) -> None:
    """One array, or over MAX_CHUNK_SIZE flax's chunked map of flat pieces (each piece a view)."""
    if array.nbytes <= MAX_CHUNK_SIZE:
        _write_ndarray(f, packer, array)
        return
    flat = np.ascontiguousarray(array).reshape(-1)
    step = max(1, MAX_CHUNK_SIZE // array.dtype.itemsize)
    starts = range(0, flat.size, step)
    f.write(packer.pack_map_header(3) + packer.pack(CHUNKED) + packer.pack(True))
    f.write(packer.pack("shape") + packer.pack({str(i): d for i, d in enumerate(array.shape)}))
    f.write(packer.pack("chunks") + packer.pack_map_header(len(starts)))
    for i, start in enumerate(starts):
        f.write(packer.pack(str(i)))
        _write_ndarray(f, packer, flat[start : start + step])


def write_msgpack_file(state: Mapping, path: str, names: list[str] | None = None) -> str:
    """flax_model.msgpack (atomically) holding ``names`` of ``state``, one tensor in memory at a time."""
    msgpack = _msgpack()
    names = parameter_names(state) if names is None else names
    for name in names:
        tensor_info(state, name)  # fail on a bad entry before creating the file
    tree = _tree_of_names(names)
    # Tuples are packed as arrays, as flax packs shapes; strict_types would refuse them.
    packer = msgpack.Packer(use_bin_type=True)

    def write_tree(f, node: dict) -> None:
        # Sorted keys: flax (through jax's pytree flattening) writes maps in sorted key order.
        f.write(packer.pack_map_header(len(node)))
        for key in sorted(node):
            f.write(packer.pack(key))
            value = node[key]
            if isinstance(value, dict):
                write_tree(f, value)
            else:
                _write_leaf(f, packer, to_channels_last(value, np.asarray(state[value])))

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write_tree(f, tree)
    return path


def save_msgpack(state: Mapping, folder: str) -> list[str]:
    """flax_model.msgpack that transformers' FlaxCLIPModel (and flax.serialization) reads."""
    path = os.path.join(folder, FILENAME)
    return [os.path.abspath(write_msgpack_file(state, path))]
