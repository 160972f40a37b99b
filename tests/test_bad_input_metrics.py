"""Bad-input corpus for every registered metric (issue 14): extreme scales, an outlier row, constant,
1-D and non-finite features on a real test vector.

Each case must end in a finite score, a NaN with a ``TransferabilityWarning``, or a one-line
``InputError``: never a raw exception, a bare numpy ``RuntimeWarning`` or a process abort. Scores are
deterministic, inputs are never written, and a score that moves with the feature scale comes with a
warning. Metrics that call faiss (a C++ abort kills pytest) run their corpus in a subprocess.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, load_vector

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import get_metric, list_metrics
from transfersel.metrics.nleep import kmeans_labels, kmeans_numpy

SCALES = {"x1e-140": 1e-140, "x1e-30": 1e-30, "x1e20": 1e20, "x1e100": 1e100, "x1e200": 1e200}
CASES = ["unit", *SCALES, "outlier_row", "constant", "one_dim", "nan", "inf"]
# Invariant to X → sX by definition (spec §2; see each module): rescaled exactly, so scores must not move.
SCALE_INVARIANT = {"knn", "linear", "parc", "hscore", "hscore_reg", "emms", "nleep", "leep", "nce"}
ISOLATED = {"nleep", "knn"}  # faiss: run in a subprocess
METRICS = [m.name for m in list_metrics()]


def make_case(case: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(features, labels, extra inputs) of ``case``: writable copies of a 300-row slice of small_gauss."""
    v = load_vector("small_gauss")
    X = np.array(v["features"][::2])  # float32 (300, 64), 6 classes
    extra = {"logits": np.array(v["logits"][::2]), "label_embeddings": np.array(v["label_embeddings"])}
    if case in SCALES:
        s = SCALES[case]  # float32 holds 1e-30 and 1e20 times the features; beyond, float64
        X = X * np.float32(s) if 1e-35 < s < 1e30 else X.astype(np.float64) * s
    elif case == "outlier_row":
        X[7] *= np.float32(1e20)
    elif case == "constant":
        X[:] = 0.5
    elif case == "one_dim":
        X = np.ascontiguousarray(X[:, :1])
    elif case in ("nan", "inf"):
        X[3, 5] = np.nan if case == "nan" else np.inf
    return X, np.array(v["labels"][::2]), extra


@cache
def outcome(name: str, case: str) -> dict:
    """Score ``case`` twice with metric ``name``: values, warnings, whether any input changed, or the
    error (``raw`` for anything but an InputError)."""
    metric = get_metric(name)
    X, y, extra = make_case(case)
    kw = {k: extra[k] for k in metric.needs}
    before = [a.copy() for a in (X, y, *kw.values())]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = [metric(X, y, **kw), metric(X, y, **kw)]
        except InputError as exc:
            return {"input_error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the corpus reports any raw exception
            return {"raw": f"{type(exc).__name__}: {exc}"}
    after = [X, y, *kw.values()]
    return {
        "values": values,
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
        "mutated": any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after, strict=True)),
    }


@cache
def isolated_outcomes(name: str) -> dict:
    """``{case: outcome}`` for all cases, computed in a child process (an abort fails only this metric)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import test_bad_input_metrics as t; "
        f"print(json.dumps({{c: t.outcome({name!r}, c) for c in t.CASES}}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f"{name} killed the process (rc {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def get_outcome(name: str, case: str) -> dict:
    return isolated_outcomes(name)[case] if name in ISOLATED else outcome(name, case)


def transferability_warnings(out: dict) -> list[str]:
    return [msg for cat, msg in out.get("warnings", []) if cat == TransferabilityWarning.__name__]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", METRICS)
def test_bad_input_gives_score_warned_nan_or_one_line_error(name, case):
    out = get_outcome(name, case)
    assert "raw" not in out, f"{name} on {case}: raw exception {out['raw']}"
    if case in ("nan", "inf"):
        assert "contains NaN or inf" in out["input_error"]
        return
    if "input_error" in out:
        assert "\n" not in out["input_error"] and out["input_error"].startswith(name)
        return
    assert not out["mutated"], f"{name} wrote into its input arrays on {case}"
    first, second = out["values"]
    assert first == second or (math.isnan(first) and math.isnan(second)), f"{name} not deterministic"
    numpy_warnings = [msg for cat, msg in out["warnings"] if cat == "RuntimeWarning"]
    assert not numpy_warnings, f"{name} on {case}: bare numpy warnings {numpy_warnings}"
    if math.isnan(first):
        assert transferability_warnings(out), f"{name} on {case}: nan without a TransferabilityWarning"


@pytest.mark.parametrize("case", list(SCALES))
@pytest.mark.parametrize("name", METRICS)
def test_scale_changes_score_only_with_a_warning(name, case):
    unit, scaled = get_outcome(name, "unit"), get_outcome(name, case)
    assert "values" in unit and "values" in scaled, (unit, scaled)
    same = math.isclose(unit["values"][0], scaled["values"][0], rel_tol=1e-5, abs_tol=1e-9)
    if name in SCALE_INVARIANT:
        assert same, f"{name} is scale-invariant but moved: {unit['values'][0]} -> {scaled['values'][0]}"
        assert transferability_warnings(scaled) == transferability_warnings(unit)  # no new warning
    elif not same:
        assert any("scale" in msg for msg in transferability_warnings(scaled)), (name, case, scaled)


def test_scale_dependent_metric_names_the_cause():
    out = outcome("transrate", "x1e200")
    assert math.isnan(out["values"][0])
    (msg,) = {m for m in transferability_warnings(out) if "scale" in m}
    assert "eps = 0.0001" in msg and "leave the float64 range" in msg


def test_rescaling_is_exact_and_skipped_in_range(vectors):
    from transfersel.metrics._inputs import check_inputs

    v = vectors["small_gauss"]
    inputs = check_inputs(v["features"], v["labels"])
    assert inputs.normalised() is inputs  # unit-scale data is scored untouched
    big = check_inputs(v["features"] * np.float32(2.0**40), v["labels"])
    assert np.array_equal(big.normalised().X, np.ldexp(v["features"], -inputs.scale_exponent))
    assert big.normalised().X.dtype == np.float32 and not big.normalised().X.flags.writeable


def test_kmeans_falls_back_to_numpy_where_faiss_would_abort():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 5)) * 10
    Z = np.repeat(centres, 50, axis=0) + rng.normal(size=(200, 5)) * 0.1
    truth = np.repeat(np.arange(4), 50)

    def pure(labels: np.ndarray) -> bool:  # one k-means cluster per blob
        return all(len(np.unique(labels[truth == c])) == 1 for c in range(4))

    assert pure(kmeans_numpy(Z, 4, seed=0)) or pure(kmeans_numpy(Z, 4, seed=1))
    Z[0] *= 1e20  # faiss's float32 squares overflow here: the numpy path must take it
    labels = kmeans_labels(Z, 4, seed=0)
    assert labels.shape == (200,) and labels.min() >= 0 and labels.max() < 4
    assert len(np.unique(labels[1:])) < len(np.unique(labels))  # the outlier gets a cluster of its own


def test_finite_check_tells_overflowing_sums_from_nan_and_inf(vectors):
    from transfersel.metrics._linalg import all_finite

    X = np.array(vectors["small_gauss"]["features"])
    assert all_finite(X)
    huge = np.full((4, 3), 3e38, dtype=np.float32)  # finite, but its float32 sum overflows
    assert all_finite(huge)
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[-1, -1] = bad
        assert not all_finite(Y)


def test_blocked_argmax_equals_numpy_on_read_only_logits(vectors):
    from transfersel.metrics._linalg import argmax_rows

    L = vectors["mid_gauss"]["logits"]  # read-only, 2000 rows: several blocks
    L = np.concatenate([L, L[:5] * 0])  # all-tied rows: the first index wins
    assert np.array_equal(argmax_rows(L, block_rows=300), np.argmax(L, axis=1))
