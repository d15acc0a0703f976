"""pytorch_model.bin (single or sharded): read through torch.load(weights_only=True), written record
by record in torch's zip format.

Reading: weights_only=True refuses any pickled object that is not a tensor or a plain container,
so a malicious file cannot run code; TorchScript archives are refused before that with a message
saying how to export their weights. The file is memory-mapped where torch can (its zip format),
and each tensor's pages are given back once the tensor has been copied out, so reading a large
file does not hold all of it.

Writing: ``torch.save`` needs every tensor in memory at once; ``write_torch_bin_file`` writes the
pickle (``data.pkl``) first, referring to storages by key exactly as ``torch.save`` does, then one
record per tensor, so memory holds one tensor. ``torch.load(weights_only=True)``, its
``mmap=True`` mode and transformers read the file unchanged.

torch is optional: without it these files give a clear error.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from clip_core.files import atomic_path
from clip_core.formats.base import (
    DTYPES,
    ML_DTYPES,
    CheckpointReader,
    extended_dtype,
    little_endian_bytes,
    open_maybe_sharded,
    reports_errors,
    save_maybe_sharded,
    tensor_info,
)
from clip_core.names import CheckpointError, parameter_names

FILENAME = "pytorch_model.bin"


def _torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            "reading or writing pytorch_model.bin needs PyTorch (pip install torch); "
            "model.safetensors needs nothing but numpy"
        ) from None
    return torch


def tensor_to_numpy(tensor) -> np.ndarray:
    """A copy of a torch tensor as a numpy array (bf16 and float8 through their bits)."""
    torch = _torch()
    tensor = tensor.detach().cpu().contiguous()
    name = str(tensor.dtype).removeprefix("torch.")
    if name in ML_DTYPES:  # numpy() refuses them: read the bits through an integer of the same width
        dtype = extended_dtype(name)
        bits = tensor.view(getattr(torch, f"int{8 * dtype.itemsize}")).numpy()
        return bits.view(dtype).copy()
    return tensor.numpy().copy()


# ---------------------------------------------------------------------------------------------
# Reading


def refuse_torchscript(path: str) -> None:
    """A TorchScript (JIT) archive is code, not a state dict: say so, and how to get its weights."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # a corrupt archive: the reader reports it
        return
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise CheckpointError(
            f"{path} is a TorchScript (JIT) archive, not a state dict; it is not read because loading "
            "it means running its code. Export the weights first, e.g. "
            "torch.save(torch.jit.load(path, map_location='cpu').state_dict(), 'state_dict.pt'), "
            "or use OpenAI's clip.load(name, jit=False) and save model.state_dict()"
        )


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


class _StorageKey(str):
    """A storage in data.pkl, by its record key."""


class _TensorKey(str):
    """A tensor in data.pkl, by its storage's record key."""


def _rebuild_tensor(storage=None, *args, **kwargs):
    return _TensorKey(storage) if isinstance(storage, _StorageKey) else storage


class _Placeholder:
    """Storage classes, dtypes and torch.Size in data.pkl: nothing to build, only a name."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        return args[0] if args else None


class _KeyUnpickler(pickle.Unpickler):
    """Reads data.pkl for the storage key of each tensor only; builds no torch object and runs no code
    (it is called after torch.load(weights_only=True) has accepted the same pickle)."""

    def find_class(self, module, name):
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _Placeholder(name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        return _StorageKey(pid[2]) if isinstance(pid, tuple) and len(pid) >= 3 else None


def _training_state_dict(state):
    """The model's tensors of a training checkpoint ({"epoch", "state_dict", "optimizer", ...})."""
    if (
        isinstance(state, Mapping)
        and isinstance(state.get("state_dict"), Mapping)
        and not all(_is_tensor(v) for v in state.values())
    ):
        return state["state_dict"]
    return state


def _is_tensor(value) -> bool:
    return isinstance(value, _TensorKey) or type(value).__name__ in ("Tensor", "Parameter")


class TorchBinReader(CheckpointReader):
    """A weights-only torch checkpoint (a flat dict of tensors, or one under "state_dict").

    In torch's zip format every record's CRC32 is checked (torch does not): the small records on
    open, each tensor's record when the tensor is read."""

    def __init__(self, path: str):
        super().__init__(path)
        torch = _torch()
        refuse_torchscript(path)
        self._state = None
        self.mmapped = False  # tensors backed by the file's pages, not by anonymous memory
        errors = []
        # mmap keeps tensors on disk until read; files in the pre-zip format cannot be mapped.
        for mmap in (True, False):
            try:
                self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
                self.mmapped = mmap
                break
            except Exception as e:
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if self._state is None:
            raise CheckpointError(
                f"{path} is not a readable weights-only PyTorch checkpoint "
                f"(torch.load(weights_only=True) failed: {errors[-1]})"
            )
        self._state = _training_state_dict(self._state)
        if not isinstance(self._state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in self._state.values()
        ):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors")
        self._zip = None
        self._keys: dict[str, str] = {}  # tensor name -> its storage record
        self._checked: set[str] = set()
        if zipfile.is_zipfile(path):
            self._open_records()

    def _open_records(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
            records = {info.filename.split("/", 1)[-1]: info for info in self._zip.infolist()}
            for name, info in records.items():
                if not name.startswith("data/"):
                    self._zip.read(info)  # checks the CRC32
            keys = _training_state_dict(_KeyUnpickler(io.BytesIO(self._zip.read(records["data.pkl"]))).load())
            self._keys = {k: str(v) for k, v in keys.items() if isinstance(v, _TensorKey)}
        except Exception as e:  # zipfile and pickle raise many types on a corrupt archive
            self.close()
            raise CheckpointError(f"{self.path}: corrupt zip archive ({type(e).__name__}: {e})") from None
        self._records = records
        if set(self._keys) != set(self._state):  # data.pkl not as we read it: check every record now
            for name, info in records.items():
                if name.startswith("data/"):
                    self._check_record(info, name)
            self._keys = {}

    def _check_record(self, info, what: str) -> None:
        try:
            with self._zip.open(info) as record:
                while record.read(2**22):
                    pass
        except zipfile.BadZipFile as e:
            raise CheckpointError(
                f"{self.path}: {what} fails its CRC32 check, the file is corrupt ({e})"
            ) from None
        except Exception as e:
            raise CheckpointError(f"{self.path}: cannot read {what} ({type(e).__name__}: {e})") from None

    def keys(self):
        return self._state.keys()

    @reports_errors
    def info(self, name):
        tensor = self._state[name]
        return tuple(tensor.shape), extended_dtype(str(tensor.dtype).removeprefix("torch."))

    def get_tensor(self, name):
        tensor = self._state[name]
        array = tensor_to_numpy(tensor)
        key = self._keys.get(name)
        if key is not None and key not in self._checked:
            info = self._records.get(f"data/{key}")
            if info is None:
                raise CheckpointError(f"{self.path}: tensor {name} has no record data/{key}")
            self._check_record(info, f"the record of tensor {name}")
            self._checked.add(key)
        if self.mmapped:  # copied out: the file's pages can go (they are re-read if touched again)
            storage = tensor.untyped_storage()
            _release_mapped(storage.data_ptr(), storage.nbytes())
        return array

    def close(self):
        self._state = {}
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def open_torch_bin(path: str) -> CheckpointReader:
    return open_maybe_sharded(path, TorchBinReader)


# ---------------------------------------------------------------------------------------------
# Writing, one record per tensor, without torch: the pickle and the zip archive are written here


def _op_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode("ascii")  # GLOBAL


def _op_int(value: int) -> bytes:
    if 0 <= value < 2**8:
        return b"K" + struct.pack("<B", value)  # BININT1
    if 0 <= value < 2**16:
        return b"M" + struct.pack("<H", value)  # BININT2
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)  # BININT
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + struct.pack("<B", len(data)) + data  # LONG1


def _op_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t" if items else b")"  # MARK ... TUPLE, or EMPTY_TUPLE


def _tensor_pickle(key: str, shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """What torch.save pickles for a contiguous CPU tensor on storage ``key``: _rebuild_tensor_v2 on a
    typed storage, or _rebuild_tensor_v3(..., dtype) on an untyped one for the dtypes without a typed
    storage class (float8, uint16 and wider)."""
    dtype_name = np.dtype(dtype).name
    numel = int(np.prod(shape, dtype=np.int64))
    storage_class = DTYPES[dtype_name].torch_storage
    if storage_class is not None:
        storage_type, count = _op_global("torch", storage_class), numel
    else:
        storage_type, count = _op_global("torch.storage", "UntypedStorage"), numel * np.dtype(dtype).itemsize
    storage = (
        _op_tuple([_op_str("storage"), storage_type, _op_str(key), _op_str("cpu"), _op_int(count)]) + b"Q"
    )
    stride, step = [], 1
    for d in reversed(shape):
        stride.append(step)
        step *= d
    args = [
        storage,
        _op_int(0),
        _op_tuple([_op_int(d) for d in shape]),
        _op_tuple([_op_int(s) for s in reversed(stride)]),
        b"\x89",  # NEWFALSE: requires_grad
        _op_global("collections", "OrderedDict") + b")R",  # backward hooks: OrderedDict()
    ]
    if storage_class is None:
        return (
            _op_global("torch._utils", "_rebuild_tensor_v3")
            + _op_tuple([*args, _op_global("torch", dtype_name)])
            + b"R"
        )
    return _op_global("torch._utils", "_rebuild_tensor_v2") + _op_tuple(args) + b"R"


def state_dict_pickle(infos: dict[str, tuple[tuple[int, ...], np.dtype]]) -> bytes:
    """data.pkl of a flat {name: tensor} dict whose i-th tensor lives on storage "i"."""
    items = b"".join(
        _op_str(name) + _tensor_pickle(str(i), shape, dtype)
        for i, (name, (shape, dtype)) in enumerate(infos.items())
    )
    return b"\x80\x02}(" + items + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


ZIP64_FROM = 0xFFFFFFFF  # sizes and offsets from here on need zip64 fields (tests lower it)
_SENTINEL = 0xFFFFFFFF  # what a 32-bit field says when the value is in the zip64 field
_ALIGNMENT = 64  # torch aligns every record's data to 64 bytes (so that storages can be mapped)


def _entry_fields(zip64: bool, crc: int, stored: int, encoded: bytes, extra: bytes) -> bytes:
    """What a record's local header and its central directory entry share: version needed, flags
    (UTF-8 names), method (stored), DOS time and date (1980-01-01), CRC32, sizes, name and extra lengths."""
    return struct.pack(
        "<HHHHHIIIHH", 45 if zip64 else 20, 0x0800, 0, 0, 0x21, crc, stored, stored, len(encoded), len(extra)
    )


class _ZipWriter:
    """The zip archive torch.save writes: stored (uncompressed) records under ``<archive>/``, each
    record's data aligned to 64 bytes with an "FB" padding field, zip64 where sizes need it. Every
    record's CRC32 is computed from the bytes as they are written."""

    def __init__(self, f, archive: str):
        self.f, self.archive = f, archive
        self.records: list[tuple[bytes, int, int, int]] = []  # (name, crc, size, header offset)

    def write_record(self, name: str, data) -> None:
        data = memoryview(data).cast("B")
        encoded = f"{self.archive}/{name}".encode()
        offset = self.f.tell()
        size = data.nbytes
        zip64 = size >= ZIP64_FROM
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        padding = -(offset + 30 + len(encoded) + len(extra) + 4) % _ALIGNMENT
        extra += b"FB" + struct.pack("<H", padding) + b"Z" * padding
        crc = zlib.crc32(data)
        stored = _SENTINEL if zip64 else size
        header = struct.pack("<I", 0x04034B50) + _entry_fields(zip64, crc, stored, encoded, extra)
        self.f.write(header + encoded + extra)
        self.f.write(data)
        self.records.append((encoded, crc, size, offset))

    def finish(self) -> None:
        start = self.f.tell()
        for encoded, crc, size, offset in self.records:
            big = size >= ZIP64_FROM or offset >= ZIP64_FROM
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset) if big else b""
            stored, at = (_SENTINEL, _SENTINEL) if big else (size, offset)
            fields = _entry_fields(big, crc, stored, encoded, extra)
            # version made by, the shared fields, comment length, disk, attributes, header offset
            self.f.write(struct.pack("<IH", 0x02014B50, 45) + fields + struct.pack("<HHHII", 0, 0, 0, 0, at))
            self.f.write(encoded + extra)
        end = self.f.tell()
        count, length = len(self.records), end - start
        if count >= min(0xFFFF, ZIP64_FROM) or start >= ZIP64_FROM or length >= ZIP64_FROM:
            self.f.write(
                struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, length, start)
            )
            self.f.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
            count, length, start = min(count, 0xFFFF), min(length, _SENTINEL), min(start, _SENTINEL)
        self.f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, length, start, 0))


def write_torch_bin_file(state: Mapping, path: str, names: list[str] | None = None) -> str:
    """``pytorch_model.bin`` (atomically) holding ``names`` of ``state``, one tensor in memory at a time.

    Written here, record by record (torch is not needed): torch.load(weights_only=True), its mmap
    mode and transformers read it as a torch.save file. Write errors are OSErrors naming ``path``."""
    names = parameter_names(state) if names is None else names
    infos = {}
    for name in names:
        shape, dtype = tensor_info(state, name)
        if np.dtype(dtype).name not in DTYPES:
            raise ValueError(f"{name}: dtype {np.dtype(dtype)} cannot be stored in pytorch_model.bin")
        infos[name] = (tuple(int(d) for d in shape), np.dtype(dtype))
    data_pkl = state_dict_pickle(infos)
    archive = os.path.splitext(os.path.basename(path))[0] or "archive"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = _ZipWriter(f, archive)
        writer.write_record("data.pkl", data_pkl)
        writer.write_record(".format_version", b"1")
        writer.write_record(".storage_alignment", b"64")
        writer.write_record("byteorder", b"little")
        for i, name in enumerate(names):
            array = np.asarray(state[name])
            if (tuple(array.shape), array.dtype) != infos[name]:
                raise CheckpointError(f"{name}: got {array.shape} {array.dtype}, announced {infos[name]}")
            writer.write_record(f"data/{i}", little_endian_bytes(array))
            del array
        writer.write_record("version", b"3\n")
        writer.write_record(".data/serialization_id", f"{zlib.crc32(data_pkl):040d}".encode())
        writer.finish()
    return path


def save_torch_bin(state: Mapping, folder: str, max_shard_size: int | None = None) -> list[str]:
    """pytorch_model.bin, or shards plus pytorch_model.bin.index.json when over ``max_shard_size``."""
    return save_maybe_sharded(state, folder, FILENAME, write_torch_bin_file, max_shard_size)
