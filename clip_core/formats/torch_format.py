"""pytorch_model.bin (single or sharded): read only through torch.load(weights_only=True).

weights_only=True refuses any pickled object that is not a tensor or a plain container, so a
malicious file cannot run code. torch is optional: without it these files give a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from clip_core.files import atomic_path
from clip_core.formats.base import (
    CheckpointReader,
    ShardedReader,
    extended_dtype,
    save_maybe_sharded,
)
from clip_core.names import CheckpointError

FILENAME = "pytorch_model.bin"

# torch dtypes numpy lacks: read their bits through an integer view of the same width.
_BIT_VIEWS = {"bfloat16": "int16", "float8_e4m3fn": "int8", "float8_e5m2": "int8"}


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
    torch = _torch()
    tensor = tensor.detach().cpu().contiguous()
    name = str(tensor.dtype).removeprefix("torch.")
    if name in _BIT_VIEWS:
        bits = tensor.view(getattr(torch, _BIT_VIEWS[name])).numpy()
        return bits.view(extended_dtype(name)).copy()
    return tensor.numpy().copy()


def numpy_to_tensor(array: np.ndarray):
    torch = _torch()
    array = np.asarray(array, order="C")
    name = array.dtype.name
    if name in _BIT_VIEWS:
        bits = torch.from_numpy(array.view(_BIT_VIEWS[name]).copy())
        return bits.view(getattr(torch, name))
    return torch.from_numpy(array.copy())


class TorchBinReader(CheckpointReader):
    def __init__(self, path: str):
        super().__init__(path)
        torch = _torch()
        self._state = None
        errors = []
        # mmap keeps tensors on disk until read; files in the pre-zip format cannot be mapped.
        for mmap in (True, False):
            try:
                self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
                self.mmapped = mmap  # tensors backed by the file's pages, not by anonymous memory
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
        return tensor_to_numpy(self._state[name])

    def close(self):
        self._state = {}


def open_torch_bin(path: str) -> CheckpointReader:
    if path.endswith(".index.json"):
        return ShardedReader(path, TorchBinReader)
    return TorchBinReader(path)


def write_torch_bin_file(state: Mapping, path: str, names: list[str]) -> str:
    torch = _torch()
    tensors = {name: numpy_to_tensor(np.asarray(state[name])) for name in names}
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    return path


def save_torch_bin(state: Mapping, folder: str, max_shard_size: int | None = None) -> list[str]:
    """pytorch_model.bin, or shards plus pytorch_model.bin.index.json (torch.save of tensors only)."""
    _torch()  # fail before writing anything
    return save_maybe_sharded(state, folder, FILENAME, write_torch_bin_file, max_shard_size)
