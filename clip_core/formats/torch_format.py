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
import pickle
import zipfile
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
    except (zipfile.BadZipFile, OSError):
        return  # the reader reports it
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


class TorchBinReader(CheckpointReader):
    """A weights-only torch checkpoint (a flat dict of tensors, or one under "state_dict")."""

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
        if (
            isinstance(self._state, Mapping)
            and isinstance(self._state.get("state_dict"), Mapping)
            and not all(isinstance(v, torch.Tensor) for v in self._state.values())
        ):
            # Lightning / open_clip training checkpoints: {"epoch", "state_dict", "optimizer", ...}
            self._state = self._state["state_dict"]
        if not isinstance(self._state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in self._state.values()
        ):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors")

    def keys(self):
        return self._state.keys()

    def info(self, name):
        tensor = self._state[name]
        return tuple(tensor.shape), extended_dtype(str(tensor.dtype).removeprefix("torch."))

    def get_tensor(self, name):
        tensor = self._state[name]
        array = tensor_to_numpy(tensor)
        if self.mmapped:  # copied out: the file's pages can go (they are re-read if touched again)
            storage = tensor.untyped_storage()
            _release_mapped(storage.data_ptr(), storage.nbytes())
        return array

    def close(self):
        self._state = {}


def open_torch_bin(path: str) -> CheckpointReader:
    return open_maybe_sharded(path, TorchBinReader)


# ---------------------------------------------------------------------------------------------
# Writing, one record per tensor


class _StorageRef:
    def __init__(self, key: str, storage_type, numel: int):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _TensorRef:
    """Pickles as torch.save pickles a contiguous CPU tensor: ``_rebuild_tensor_v2(storage, ...)``
    on a typed storage, or ``_rebuild_tensor_v3(..., dtype)`` on an untyped one for the dtypes
    that have no typed storage class (float8, uint16 and wider)."""

    def __init__(self, storage: _StorageRef, shape: tuple[int, ...], dtype=None):
        self.storage, self.shape, self.dtype = storage, shape, dtype

    def __reduce__(self):
        import torch._utils

        stride, step = [], 1
        for d in reversed(self.shape):
            stride.append(step)
            step *= d
        args = (self.storage, 0, tuple(self.shape), tuple(reversed(stride)), False, collections.OrderedDict())
        if self.dtype is None:
            return torch._utils._rebuild_tensor_v2, args
        return torch._utils._rebuild_tensor_v3, (*args, self.dtype)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _tensor_ref(torch, key: str, name: str, shape: tuple[int, ...], dtype: np.dtype) -> _TensorRef:
    dtype_name = np.dtype(dtype).name
    if dtype_name not in DTYPES or not hasattr(torch, dtype_name):
        raise ValueError(f"{name}: dtype {dtype_name} cannot be stored in pytorch_model.bin")
    numel = int(np.prod(shape))
    storage_class = DTYPES[dtype_name].torch_storage
    if storage_class is not None:
        return _TensorRef(_StorageRef(key, getattr(torch, storage_class), numel), shape)
    storage = _StorageRef(key, torch.UntypedStorage, numel * np.dtype(dtype).itemsize)
    return _TensorRef(storage, shape, getattr(torch, dtype_name))


def write_torch_bin_file(state: Mapping, path: str, names: list[str] | None = None) -> str:
    """``pytorch_model.bin`` (atomically) holding ``names`` of ``state``, one tensor in memory at a time."""
    torch = _torch()
    names = parameter_names(state) if names is None else names
    refs, infos = {}, {}
    for i, name in enumerate(names):
        shape, dtype = tensor_info(state, name)
        refs[name] = _tensor_ref(torch, str(i), name, tuple(shape), dtype)
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
            array = np.asarray(state[name])
            if (tuple(array.shape), array.dtype) != infos[name]:
                raise CheckpointError(f"{name}: got {array.shape} {array.dtype}, announced {infos[name]}")
            data = np.frombuffer(little_endian_bytes(array), np.uint8)
            writer.write_record(f"data/{refs[name].storage.key}", data.ctypes.data, data.nbytes)  # no copy
            del array, data
        writer.write_end_of_file()
        del writer
    return path


def save_torch_bin(state: Mapping, folder: str, max_shard_size: int | None = None) -> list[str]:
    """pytorch_model.bin, or shards plus pytorch_model.bin.index.json when over ``max_shard_size``."""
    _torch()  # fail before writing anything
    return save_maybe_sharded(state, folder, FILENAME, write_torch_bin_file, max_shard_size)
