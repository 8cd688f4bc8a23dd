"""Dataset registry: shapes, dtypes, seeded determinism and path confinement."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from thunderhelm.ga.training.datasets import (
    DatasetError,
    PreparedDataset,
    bigram_baseline_accuracy,
    load_dataset,
)
from thunderhelm.streams.config.settings import default_text_dir

SHAKESPEARE = default_text_dir()
NOWHERE = Path("/nonexistent-thunderhelm")
needs_text = pytest.mark.skipif(not SHAKESPEARE.is_dir(), reason=f"{SHAKESPEARE} is missing")


def _load(spec: dict[str, object], root: Path = NOWHERE) -> PreparedDataset:
    return load_dataset(spec, data_root=root, text_dir=SHAKESPEARE)


def _check_layout(ds: PreparedDataset) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.flags.c_contiguous and y.flags.c_contiguous
        assert not x.flags.writeable
        assert x.shape == (len(y), ds.n_features)
        assert y.min() >= 0 and y.max() < ds.n_classes
    views = ds.buffers()
    assert set(views) == {"x_train", "y_train", "x_val", "y_val"}
    assert views["x_train"].format == "f" and views["y_val"].format == "i"
    assert views["x_train"].nbytes == ds.x_train.nbytes and views["x_train"].readonly
    # The views share the arrays' memory: no copy is made for the pool.
    assert np.shares_memory(np.asarray(views["x_val"]), ds.x_val)


def _same(a: PreparedDataset, b: PreparedDataset) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    )


def test_spirals_shapes_split_and_standardisation() -> None:
    ds = _load({"name": "spirals", "samples": 1200, "classes": 3, "seed": 7})
    _check_layout(ds)
    assert (ds.n_features, ds.n_classes) == (2, 3)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (720, 240, 240)
    assert np.allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
    assert set(np.unique(ds.y_train)) == {0, 1, 2}


def test_seeded_determinism() -> None:
    spec: dict[str, object] = {"name": "spirals", "samples": 300, "noise": 0.1, "seed": 3}
    assert _same(_load(spec), _load(spec))
    assert not _same(_load(spec), _load({**spec, "seed": 4}))


@needs_text
def test_seeded_determinism_of_text_windows() -> None:
    text: dict[str, object] = {"name": "shakespeare", "samples": 500, "context": 4, "seed": 9}
    assert _same(_load(text), _load(text))


def test_digits_from_scikit_learn() -> None:
    ds = _load({"name": "digits", "seed": 1, "validation_fraction": 0.25})
    _check_layout(ds)
    assert (ds.n_features, ds.n_classes) == (64, 10)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797
    assert ds.labels == tuple("0123456789")
    small = _load({"name": "digits", "samples": 200, "seed": 1})
    assert len(small.y_train) + len(small.y_val) + len(small.y_test) == 200


def test_digits_are_scikit_learns_without_importing_it() -> None:
    """The rows are load_digits' own, read in a process that never imports sklearn."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    probe = (
        "import sys, numpy as np\n"
        "from thunderhelm.ga.training.datasets import _digits_table\n"
        "x, y = _digits_table()\n"
        "assert 'sklearn' not in sys.modules, 'sklearn was imported'\n"
        "sys.stdout.buffer.write(np.ascontiguousarray(x).tobytes() + y.tobytes())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    read = np.frombuffer(done.stdout[: x.size * 8], dtype=np.float64).reshape(x.shape)
    labels = np.frombuffer(done.stdout[x.size * 8 :], dtype=np.int64)
    np.testing.assert_array_equal(read, x)
    np.testing.assert_array_equal(labels, y)


@needs_text
def test_shakespeare_windows_and_bigram_baseline() -> None:
    ds = _load({"name": "shakespeare", "samples": 4000, "context": 6, "seed": 2})
    _check_layout(ds)
    v = len(ds.vocabulary)
    assert ds.context == 6 and ds.n_classes == v and ds.n_features == 6 * v
    assert ds.vocabulary == "".join(sorted(set(ds.vocabulary))) and "e" in ds.vocabulary
    assert not any(c.isupper() for c in ds.vocabulary)
    # Undo the standardisation: every window position is exactly one-hot.
    raw = ds.x_train * ds.scale + ds.mean
    assert np.allclose(raw.reshape(len(raw), 6, v).sum(axis=2), 1, atol=1e-4)
    baseline = bigram_baseline_accuracy(ds)
    # Far better than always predicting the commonest char, far from perfect.
    commonest = np.bincount(ds.y_val).max() / len(ds.y_val)
    assert commonest < baseline < 0.6
    cased = _load({"name": "shakespeare", "samples": 500, "lowercase": False, "seed": 2})
    assert any(c.isupper() for c in cased.vocabulary)
    with pytest.raises(DatasetError, match="not a character-level"):
        bigram_baseline_accuracy(_load({"name": "spirals", "samples": 50}))


def test_shakespeare_needs_text_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no \.txt files"):
        load_dataset({"name": "shakespeare"}, data_root=tmp_path, text_dir=tmp_path)


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_csv_with_header_and_string_labels(tmp_path: Path, sep: str) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 3 * 0.5},{'cat' if i % 2 else 'dog'}" for i in range(40)]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pets.csv").write_text("\n".join(rows).replace(",", sep) + "\n")
    ds = _load({"name": "csv", "path": "sub/pets.csv", "seed": 1}, tmp_path)
    _check_layout(ds)
    assert (ds.n_features, ds.n_classes) == (2, 2)
    assert ds.labels == ("cat", "dog")
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 40


def test_npz_and_integer_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(50, 5)), y=rng.integers(0, 4, 50))
    ds = _load({"name": "npz", "path": "d.npz"}, tmp_path)
    _check_layout(ds)
    assert (ds.n_features, ds.n_classes) == (5, 4)
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 2)))
    with pytest.raises(DatasetError, match="'x' and 'y'"):
        _load({"name": "npz", "path": "bad.npz"}, tmp_path)


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd.csv", "../outside.csv", "sub/../../outside.csv", "~/x.csv", "C:\\x.csv", ""],
)
def test_paths_must_stay_under_the_data_root(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.csv").write_text("1,2,0\n3,4,1\n" * 4)
    with pytest.raises(DatasetError):
        _load({"name": "csv", "path": path}, root)


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("1,2,0\n3,4,1\n" * 4)
    os.symlink(secret, root / "link.csv")
    os.symlink(tmp_path, root / "dir")
    with pytest.raises(DatasetError, match="outside the data root"):
        _load({"name": "csv", "path": "link.csv"}, root)
    with pytest.raises(DatasetError, match="outside the data root"):
        _load({"name": "csv", "path": "dir/secret.csv"}, root)
    # A link that stays inside the root is fine.
    os.symlink(root / "real.csv", root / "inner.csv")
    (root / "real.csv").write_text("1,2,0\n3,4,1\n" * 4)
    assert _load({"name": "csv", "path": "inner.csv"}, root).n_classes == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "mnist"}, "unknown dataset"),
        ({"name": "spirals", "samples": "many"}, "samples"),
        ({"name": "spirals", "classes": True}, "classes"),
        ({"name": "spirals", "noise": float("nan")}, "noise"),
        ({"name": "spirals", "code": "import os"}, "unknown keys"),
        ({"name": "spirals", "validation_fraction": 0.99}, "validation_fraction"),
        ({"name": "csv", "path": "missing.csv"}, "no such file"),
        ({"name": "csv", "path": "data.npz"}, r"\.csv"),
    ],
)
def test_bad_specs_raise_dataset_error(
    tmp_path: Path, spec: dict[str, object], message: str
) -> None:
    (tmp_path / "data.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match=message):
        _load(spec, tmp_path)
    assert issubclass(DatasetError, ValueError)


def _row_set(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_three_disjoint_seeded_splits() -> None:
    spec: dict[str, object] = {"name": "spirals", "samples": 500, "noise": 0.3, "seed": 5}
    ds = _load({**spec, "validation_fraction": 0.1, "test_fraction": 0.3})
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (300, 50, 150)
    train, val, test = _row_set(ds.x_train), _row_set(ds.x_val), _row_set(ds.x_test)
    assert not (train & val) and not (train & test) and not (val & test)
    # The test split never reaches the pool.
    assert set(ds.buffers()) == {"x_train", "y_train", "x_val", "y_val"}
    # Standardised with training statistics only.
    assert np.allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(ds.x_test.mean(axis=0), 0, atol=1e-5)


def test_fingerprint_follows_the_data() -> None:
    spec: dict[str, object] = {"name": "spirals", "samples": 200, "seed": 1}
    a, b = _load(spec), _load(spec)
    assert a.fingerprint() == b.fingerprint() and a.fingerprint().startswith("sha256:")
    assert _load({**spec, "seed": 2}).fingerprint() != a.fingerprint()
    assert _load({**spec, "test_fraction": 0.3}).fingerprint() != a.fingerprint()


def test_fractions_that_leave_no_training_rows_are_refused() -> None:
    with pytest.raises(DatasetError, match=r"at most 0\.9"):
        _load({"name": "spirals", "validation_fraction": 0.5, "test_fraction": 0.5})
