"""Input validation at the metric boundary and through the CLI: one-line errors, never tracebacks."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import check_inputs, encode_labels, get_metric, list_metrics, score


@pytest.fixture
def small(vectors):
    v = vectors["small_gauss"]
    return v["features"], v["labels"], v["logits"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda X, y: (X[:-1], y), "features has 599 rows but labels has 600"),
        (lambda X, y: (np.where(np.arange(X.shape[1]) == 3, np.nan, X), y), "NaN or inf"),
        (lambda X, y: (np.where(np.arange(X.shape[1]) == 3, np.inf, X), y), "NaN or inf"),
        (lambda X, y: (X, np.zeros_like(y)), "at least 2 classes"),
        (lambda X, y: (X[:0], y[:0]), "empty"),
        (lambda X, y: (X.astype(np.int32), y), "must be float32 or float64"),
        (lambda X, y: (X[:, 0], y), "must be 2-D"),
        (lambda X, y: (X, y[:, None].repeat(2, 1)), "labels must be 1-D"),
    ],
)
def test_bad_inputs_raise_one_line_errors(small, mutate, message):
    X, y, _ = small
    X2, y2 = mutate(X, y)
    with pytest.raises(InputError, match=message) as info:
        get_metric("leep")(X2, y2, logits=np.zeros((len(X2), 3), np.float32) if len(X2) == len(y2) else None)
    assert "\n" not in str(info.value)


def test_missing_optional_inputs_and_unknown_names(small):
    X, y, _ = small
    with pytest.raises(InputError, match="leep needs logits"):
        get_metric("leep")(X, y)
    with pytest.raises(InputError, match="unknown metric 'nope'; known metrics: .*leep"):
        get_metric("nope")
    with pytest.raises(InputError, match="leep has no option foo; its options are: log"):
        get_metric("leep")(X, y, logits=small[2], foo=1)
    with pytest.raises(InputError, match=r"label_embeddings has 4 classes .* labels have 6"):
        check_inputs(X, y, label_embeddings=np.zeros((3, 4, 8), np.float32))
    with pytest.raises(InputError, match="logits has 10 rows"):
        check_inputs(X, y, logits=np.zeros((10, 3), np.float32))


def test_labels_of_any_type_are_remapped_in_sorted_order():
    codes, classes = encode_labels(np.array(["dog", "cat", "dog", "emu"]))
    assert codes.tolist() == [1, 0, 1, 2] and classes.tolist() == ["cat", "dog", "emu"]
    codes, classes = encode_labels([10, -3, 10, 7])
    assert codes.tolist() == [2, 0, 2, 1] and classes.tolist() == [-3, 7, 10]


def test_single_sample_class_warns_but_scores(small):
    X, y, L = small
    y1 = y.copy()
    y1[0] = 99  # a class with one sample
    with pytest.warns(TransferabilityWarning, match="single sample"):
        s = get_metric("leep")(X, y1, logits=L)
    assert np.isfinite(s)


def test_inputs_are_not_copied_and_stay_read_only(small):
    X, y, _ = small
    X = np.ascontiguousarray(X.copy())
    inputs = check_inputs(X, y)
    assert np.shares_memory(inputs.X, X) and not inputs.X.flags.writeable
    assert X.flags.writeable  # the caller's own array keeps its flags


def test_the_scale_comes_from_the_finite_check_not_a_second_read(small, monkeypatch):
    """check_inputs keeps the min and max its NaN/inf check found: scale_exponent reads X no more; a derived
    Inputs whose X changed (subsample, projection, rescale) computes its own."""
    X, y, _ = small
    X = np.ascontiguousarray(X) * 2.0**30  # outside 2^±20: normalised() rescales
    inputs = check_inputs(X, y)
    expected = int(np.round(np.log2(np.abs(X).max())))

    def no_read(*args, **kwargs):
        raise AssertionError("X read again for its extremes")

    with monkeypatch.context() as m:
        m.setattr(np, "min", no_read)
        m.setattr(np, "max", no_read)
        assert inputs.scale_exponent == expected
    assert inputs.normalised().scale_exponent == 0  # its own X (scaled by 2^-e): computed afresh
    sub = inputs.subsampled(100)
    assert sub.scale_exponent == int(np.round(np.log2(np.abs(sub.X).max())))


def test_score_shares_one_validation_and_matches_single_calls(small):
    X, y, L = small
    both = score(X, y, ["leep", "leep"], logits=L, options={"leep": {"log": False}})
    assert both == {"leep": get_metric("leep")(X, y, logits=L, log=False)}


def test_every_metric_is_listed_with_a_description():
    metrics = list_metrics()
    assert {m.name for m in metrics} >= {"leep"}
    for m in metrics:
        assert m.description and m.reference and "\n" not in m.description


def test_cli_score_and_errors(tmp_path, small):
    X, y, L = small
    np.save(tmp_path / "f.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "l.npy", L)
    cli = [sys.executable, "-m", "transfersel"]
    ok = subprocess.run(
        [
            *cli,
            "score",
            tmp_path / "f.npy",
            tmp_path / "y.npy",
            "-m",
            "leep",
            "--logits",
            tmp_path / "l.npy",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    import json

    (row,) = json.loads(ok.stdout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert row["score"] == pytest.approx(get_metric("leep")(X, y, logits=L), rel=1e-12)
    np.save(tmp_path / "bad.npy", X[:10])
    for args, message in [
        (["score", tmp_path / "bad.npy", tmp_path / "y.npy", "-m", "knn"], "features has 10 rows"),
        (["score", tmp_path / "f.npy", tmp_path / "y.npy", "-m", "leep"], "leep cannot run: it needs logits"),
        (["score", tmp_path / "missing.npy", tmp_path / "y.npy", "-m", "knn"], "does not exist"),
    ]:
        r = subprocess.run([*cli, *args], capture_output=True, text=True)
        assert r.returncode == 2, r
        assert "Traceback" not in r.stderr and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_device_option_is_validated(small):
    X, y, L = small
    cpu = get_metric("leep")(X, y, logits=L, device="cpu")
    assert get_metric("leep")(X, y, logits=L, device="auto") == cpu  # no GPU here: auto means cpu
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU is visible"):
            get_metric("leep")(X, y, logits=L, device="cuda")


def test_remembered_metric_results_stay_with_the_features_they_were_computed_on(small):
    """A metric's result is remembered on its Inputs; Inputs derived with other features (a subsample, a
    projection, a rescale) start with none of them, so they never return the parent's score."""
    X, y, _ = small
    inputs = check_inputs(np.ascontiguousarray(X) * 2.0**30, y)
    logme = get_metric("logme")
    full = logme.compute(inputs)
    assert logme.compute(inputs) == full  # remembered
    for derived in (inputs.subsampled(100), inputs.reduced(8), inputs.normalised()):
        fresh = check_inputs(np.array(derived.X), derived.classes[derived.y])
        assert logme.compute(derived) == pytest.approx(logme.compute(fresh), rel=1e-12)
    assert logme.compute(inputs.subsampled(100)) != full
