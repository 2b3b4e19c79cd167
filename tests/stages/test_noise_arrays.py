"""`flip_labels` and `dilute` on NumPy arrays and torch tensors: exactly the stage's counts, rows and seeds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_digits

from pipeline.errors import InputDataError, ParamError
from stages.noise import LabelNoise
from stages.noise_arrays import dilute, flip_labels


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def test_flip_counts_are_exact_per_class(digits):
    _, y = digits
    noisy = flip_labels(y, rate=0.3, seed=7)
    assert isinstance(noisy, np.ndarray) and noisy.dtype == y.dtype and noisy.shape == y.shape
    for c in range(10):
        in_class = y == c
        assert int((noisy[in_class] != c).sum()) == int(np.floor(0.3 * in_class.sum() + 0.5))
    pair = flip_labels(y, noise="pairflip", rate=0.2, seed=7)
    changed = pair != y
    assert (pair[changed] == (y[changed] + 1) % 10).all()


def test_flip_is_the_stage_row_for_row(digits):
    _, y = digits
    table = pl.DataFrame({"id": np.arange(y.size), "label": y})
    stage = LabelNoise(mode="flip", noise="symmetric", rate={0: 0.5, 3: 0.1}).apply(table, seed=3)
    result = flip_labels(y, rate={0: 0.5, 3: 0.1}, seed=3, details=True)
    assert np.array_equal(result.y, stage["label"].to_numpy())
    assert np.array_equal(result.is_noisy, stage["is_noisy"].to_numpy())
    assert result.transitions["count"].sum() == y.size
    assert not np.array_equal(flip_labels(y, rate=0.3, seed=4), flip_labels(y, rate=0.3, seed=5))


def test_torch_tensors_keep_dtype_and_device(digits):
    torch = pytest.importorskip("torch")
    X, y = digits
    yt = torch.as_tensor(y, dtype=torch.int32)
    noisy = flip_labels(yt, rate=0.25, seed=1)
    assert isinstance(noisy, torch.Tensor) and noisy.dtype == torch.int32 and noisy.device == yt.device
    assert np.array_equal(noisy.numpy(), flip_labels(y, rate=0.25, seed=1))
    out = dilute(torch.as_tensor(X), yt, alpha=2, seed=1)
    assert isinstance(out.X, torch.Tensor) and out.X.shape == (3 * len(y), 64) and out.y.dtype == torch.int32


def test_dilute_adds_exactly_alpha_n_rows_with_their_inputs(digits):
    X, y = digits
    out = dilute(X, y, alpha=2.5, seed=0)
    added = int(np.floor(2.5 * y.size + 0.5))
    assert out.X.shape == (y.size + added, 64) and out.y.shape == (y.size + added,)
    assert np.array_equal(out.X[: y.size], X) and np.array_equal(out.y[: y.size], y)
    assert np.array_equal(out.X[y.size:], X[out.source_index[y.size:]])
    uses = np.bincount(out.source_index[y.size:], minlength=y.size)
    assert set(uses) <= {added // y.size, added // y.size + 1}  # whole cycles over the data
    assert out.is_noisy[: y.size].sum() == 0
    table = pl.DataFrame({"id": np.arange(y.size), "label": y})
    stage = LabelNoise(mode="dilute", alpha=2.5).apply(table, seed=0)
    assert np.array_equal(out.y, stage["label"].to_numpy())


def test_structured_centroid_dilution_uses_the_rows_of_x(digits):
    X, y = digits
    out = dilute(X[:400], y[:400], alpha=1, noise="structured", delta=1.0, confusion="centroid", seed=2)
    table = pl.DataFrame({"id": np.arange(400), "label": y[:400],
                          "features": X[:400].astype(np.float64)})
    stage = LabelNoise(mode="dilute", alpha=1, noise="structured", delta=1.0, confusion="centroid",
                       feature_column="features").apply(table, seed=2)
    assert np.array_equal(out.y, stage["label"].to_numpy())
    # delta = 1: every added label is its class's one confusing class.
    pairs = {(int(a), int(b)) for a, b in zip(y[out.source_index[400:]], out.y[400:])}
    assert len({a for a, _ in pairs}) == len(pairs)


@pytest.mark.parametrize("seed", [1.5, True, "0", "abc", -1, 1 << 64])
def test_a_seed_that_is_not_a_non_negative_integer_is_refused(seed):
    """1.5 was truncated to 1 and True meant 1: two different seeds silently drew the same noise."""
    y = np.array([0, 1, 2] * 10)
    message = r"^parameter 'seed': must be a non-negative integer below 2\*\*64, got "
    with pytest.raises(ParamError, match=message):
        flip_labels(y, rate=0.3, seed=seed)
    with pytest.raises(ParamError, match=message):
        dilute(np.zeros((30, 2)), y, alpha=1, seed=seed)
    with pytest.raises(ParamError, match=r"^stage 'label_noise', parameter 'seed': must be a non-negative integer"):
        LabelNoise(mode="flip", rate=0.3).apply(pl.DataFrame({"id": range(30), "label": y}), seed=seed)


def test_numpy_integer_seeds_are_the_same_seed():
    y = np.array([0, 1, 2] * 10)
    np.testing.assert_array_equal(flip_labels(y, rate=0.3, seed=np.int64(3)), flip_labels(y, rate=0.3, seed=3))


def test_centroid_confusion_needs_numeric_inputs():
    y = np.array([0, 1, 2] * 10)
    with pytest.raises(ParamError, match=r"parameter 'X': confusion='centroid' uses the rows of X as feature vectors"):
        dilute(np.array(["a b", "c"] * 15), y, alpha=1, noise="structured", confusion="centroid")


@pytest.mark.parametrize(("call", "expected"), [
    (lambda: flip_labels(np.array([0.0, 1.0, 1.0]), rate=0.3), "stage 'label_noise', parameter 'y': y is Float64, not integer or string class labels"),
    (lambda: flip_labels(np.array([], dtype=np.int64), rate=0.3), "stage 'label_noise': y is empty"),
    (lambda: dilute(np.zeros((3, 2)), np.array([0.5, 1.5, 2.5])), "stage 'label_noise', parameter 'y': y is Float64, not integer or string"),
    # The rows of X are the table's column 'features' (centroid confusion): a NaN there named that column.
    (lambda: dilute(np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), np.array([0, 1, 0, 1]), noise="structured",
                    confusion="centroid"), "parameter 'X': X has NaN or infinite values in 1 vector(s)"),
])
def test_errors_name_the_arrays_passed_not_the_stages_table(call, expected):
    # The stage runs on a table built from the arrays; its words (label_column, input 'data') were never the
    # caller's, so the error names y (or X, ids) and no file.
    with pytest.raises(InputDataError) as info:
        call()
    assert str(info.value).startswith(expected), str(info.value)
    assert "label_column" not in str(info.value) and "input 'data'" not in str(info.value)


def test_repeated_ids_are_refused_whatever_the_rate_and_seed():
    # Twins (one id, two rows) drew one fate: both flipped, to the same class, or neither. Only twins either side
    # of a cut were refused, so this input passed at rate 0.5 and failed at 0.2.
    y, ids = np.array([0, 1] * 10), np.arange(20) // 2
    for rate, seed in ((0.5, 0), (0.5, 3), (0.2, 0)):
        with pytest.raises(InputDataError) as info:
            flip_labels(y, rate=rate, ids=ids, seed=seed)
        assert info.value.param == "ids"
        assert str(info.value) == ("parameter 'ids': ids holds duplicate ids (10 ids repeated, e.g. 0); ids must be "
                                   "unique (make the ids unique, or pass ids=None to key by row position)")
    assert flip_labels(y, rate=0.5, ids=np.arange(20) * 7, seed=0).shape == (20,)


def test_dilute_refuses_a_confusion_for_uniform_noise_in_its_own_words():
    # The stage's refusal named `feature_column` (no argument of dilute) and YAML's "set noise: structured".
    X, y = np.random.default_rng(0).random((10, 2)), np.arange(10) % 2
    with pytest.raises(ParamError) as err:
        dilute(X, y, noise="uniform", confusion="centroid")
    assert str(err.value) == ("parameter 'confusion': confusion is a structured-noise parameter, unused by noise "
                              "'uniform' (every added label is drawn uniformly); leave it out or pass "
                              "noise='structured'")
