from __future__ import annotations

import numpy as np
import pytest
import torchvision

from search.config import TrialConfig
from search.errors import ConfigError
from search.training import datasets as data
from search.training import splits
from search.training.protocols import make_fold


def test_cifar10_reader_decodes_planes_and_rows(cifar10_dir):
    ds = data.load("cifar10", cifar10_dir)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (40, 3, 32, 32)
    img = ds.train_x[7]
    assert (img[0] == (np.arange(32) * 8)[:, None]).all()  # red counts rows
    assert (img[1] == (np.arange(32) * 8)[None, :]).all()  # green counts columns
    assert (img[2] == 7).all()  # blue holds the index
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    # batches are concatenated in order 1..5
    assert ds.train_y[:3].tolist() == [(20 + i) % 10 for i in range(3)]
    assert ds.train_y[20:23].tolist() == [(40 + i) % 10 for i in range(3)]


def test_cifar100_reader_uses_fine_labels(cifar100_dir):
    ds = data.load("cifar100", cifar100_dir)
    assert ds.num_classes == 100 and ds.classes[42] == "class42"
    assert ds.train_y.max() == 99
    assert (ds.test_x[5][1] == (np.arange(32) * 8)[None, :]).all()


def test_mean_std_come_from_training_split(cifar10_dir):
    ds = data.load("cifar10", cifar10_dir)
    mean, std = ds.mean_std
    expected = ds.train_x.astype(np.float64).mean(axis=(0, 2, 3)) / 255
    assert np.allclose(mean, expected)
    assert mean[0] == pytest.approx(np.arange(32).mean() * 8 / 255)
    assert std[2] > 0


def test_missing_cifar_offline_is_one_clear_error(tmp_path, monkeypatch):
    # Simulate "offline": the official archive URL points at a closed local port.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar.tar.gz")
    with pytest.raises(ConfigError) as err:
        data.load("cifar10", tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message
    assert "cifar-10-python.tar.gz" in message and str(tmp_path / "empty") in message


def test_missing_cifar_without_download(tmp_path):
    with pytest.raises(ConfigError, match="cifar-100-python"):
        data.load("cifar100", tmp_path, download=False)


def test_data_dir_env_fallback(cifar10_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(cifar10_dir))
    assert data.resolve_data_dir(None) == cifar10_dir
    assert data.load("cifar10").train_x.shape[0] == 100


def test_digits_is_real_32x32_rgb():
    ds = data.load("digits")
    assert ds.train_x.shape[1:] == (3, 32, 32) and ds.num_classes == 10
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert (ds.train_x[:, 0] == ds.train_x[:, 1]).all()  # grey replicated to RGB
    assert ds.train_x.max() == 255 and ds.train_x.min() == 0


def test_synthetic_is_deterministic_and_sized():
    a = data.load("synthetic", synthetic_size=300, synthetic_classes=4)
    data._load_synthetic.cache_clear()
    b = data.load("synthetic", synthetic_size=300, synthetic_classes=4)
    assert a.train_x.shape == (300, 3, 32, 32) and a.num_classes == 4
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)
    assert np.bincount(a.train_y).tolist() == [75] * 4


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="data.dataset"):
        data.load("imagenet")


def test_holdout_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    tr, va = splits.holdout_split(labels, 0.1, seed=3)
    assert len(va) == 50 and len(tr) == 450
    assert not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [5] * 10
    tr2, va2 = splits.holdout_split(labels, 0.1, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, splits.holdout_split(labels, 0.1, seed=4)[1])


def test_kfold_disjoint_stratified_covering():
    labels = np.repeat(np.arange(5), 20)
    folds = splits.kfold_splits(labels, 4, seed=0)
    assert len(folds) == 4
    vals = [va for _, va in folds]
    assert sorted(np.concatenate(vals).tolist()) == list(range(100))  # cover, no overlap
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert len(tr) + len(va) == 100
        assert np.bincount(labels[va]).tolist() == [5] * 5


def test_kfold_too_few_per_class():
    with pytest.raises(ConfigError, match="data.kfold"):
        splits.kfold_splits(np.array([0, 0, 1, 1, 1]), 3, seed=0)


def test_subsample_is_stratified():
    labels = np.repeat(np.arange(4), 100)
    keep = splits.subsample(labels, 40, seed=0)
    assert np.bincount(labels[keep]).tolist() == [10] * 4
    assert len(splits.subsample(labels, 0, seed=0)) == 400


def test_final_data_evaluates_on_test_split(cifar10_dir):
    ds = data.load("cifar10", cifar10_dir)
    td = splits.final_data(ds, split_seed=0, train_limit=0, device="cpu")
    assert td.eval_split == "test" and td.train_x.shape[0] == 100 and td.eval_x.shape[0] == 40
    hold = make_fold(
        TrialConfig().with_overrides({"data.val_fraction": 0.2, "runtime.device": "cpu"}), ds, 0
    )
    assert hold.eval_split == "val" and hold.train_x.shape[0] == 80 and hold.eval_x.shape[0] == 20


def test_holdout_falls_back_to_random_when_classes_cannot_be_stratified():
    labels = np.arange(50) % 25  # 25 classes of 2, 5 validation images
    with pytest.warns(UserWarning, match="not stratified"):
        tr, va = splits.holdout_split(labels, 0.1, seed=0)
    assert len(va) == 5 and len(tr) == 45 and not set(tr) & set(va)


class _RunsCode:
    """Unpickling this calls os.system: what a crafted batch file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_batch_file_that_would_run_code_is_refused(cifar10_dir, tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    batch = cifar10_dir / "cifar-10-batches-py" / "data_batch_1"
    with batch.open("wb") as fh:  # the exploit sits where the labels belong
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": _RunsCode(marker)}, fh)
    with pytest.raises(ConfigError) as err:
        data.load("cifar10", cifar10_dir, download=False)
    message = str(err.value)
    assert str(batch) in message and "posix.system" in message and "\n" not in message
    assert not marker.exists()  # nothing ran


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batches_pickled_by_numpy_at_any_protocol_are_read(make_cifar10, tmp_path, protocol):
    import pickle

    root = make_cifar10(tmp_path / "cifar")
    for path in (root / "cifar-10-batches-py").iterdir():
        with path.open("rb") as fh:
            content = pickle.load(fh)
        with path.open("wb") as fh:
            pickle.dump(content, fh, protocol=protocol)
    ds = data.load("cifar10", root, download=False)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.classes[9] == "truck"


def test_a_failed_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    """The download really runs and fails (the archive's URL points at a closed local port):
    the folders made for it go with it, so a later run finds no empty data folder."""
    monkeypatch.delenv("CIFAR_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar.tar.gz")
    target = tmp_path / "new" / "data"
    with pytest.raises(ConfigError, match="downloading it failed"):
        data.load("cifar10", target)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(ConfigError, match="downloading it failed"):
        data.load("cifar10", existing / "cifar")
    assert existing.exists() and not list(existing.iterdir())  # the user's folder stays
