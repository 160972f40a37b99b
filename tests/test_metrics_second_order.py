"""SFDA, H-score, TransRate, GBC: the spec's exact identities against naive forms, and degenerate regimes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import check_inputs, get_metric
from transfersel.metrics.sfda import regularised_scatter


def quiet(metric: str, X, y, **options) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferabilityWarning)
        return get_metric(metric)(X, y, **options)


def class_means(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([X[y == c].mean(axis=0) for c in range(y.max() + 1)])


# --- SFDA ------------------------------------------------------------------------------------------


def naive_sfda(X: np.ndarray, y: np.ndarray) -> float:
    """SFDA as the reference computes it: per-class covariances and the generalised eigh(Sb, B)."""
    N, D = X.shape
    C = y.max() + 1
    q = np.bincount(y) / N

    def fit_predict(X, lam):
        M = class_means(X, y)
        Sw = sum(q[c] * np.cov(X[y == c].T, bias=True) for c in range(C))
        if lam is None:
            v = Sw.sum(axis=1)
            for _ in range(3):
                u = Sw @ v / np.linalg.norm(Sw @ v)
                v = Sw @ u / np.linalg.norm(Sw @ u)
            lam = max(np.exp(-5 * (v @ Sw @ u)), 1e-10)
        B = (1 - lam) * Sw + lam * np.trace(Sw) / D * np.eye(D)
        St = np.cov(X.T, bias=True)
        St = (1 - lam) * St + lam * np.trace(St) / D * np.eye(D)
        _, V = scipy.linalg.eigh(St - B, B)
        coef = M @ V @ V.T
        logits = X @ coef.T - 0.5 * np.diag(M @ coef.T) + np.log(q)
        P = np.exp(logits - logits.max(axis=1, keepdims=True))
        return P / P.sum(axis=1, keepdims=True), lam, M

    P, lam, M = fit_predict(X, None)
    soft = np.exp(P) / np.exp(P).sum(axis=1, keepdims=True)
    p = soft[np.arange(N), y][:, None]
    outer = (M.sum(axis=0) - M) / (C - 1)
    P2, _, _ = fit_predict(p * X + (1 - p) * outer[y], lam)
    return float(P2[np.arange(N), y].mean())


def test_sfda_equals_generalised_eigh_form(vectors):
    v = vectors["small_gauss"]
    X, y = v["features"][:300].astype(np.float64), v["labels"][:300]
    s = get_metric("sfda")(X, y, store_mixed_in_input_dtype=False)
    assert s == pytest.approx(naive_sfda(X, y), rel=1e-9)


def test_regularised_scatter_is_the_explicit_formula(vectors):
    v = vectors["relu_gauss"]
    X, y = v["features"].astype(np.float64), v["labels"]
    N, D = X.shape
    R = X - class_means(X, y)[y]
    Sw = R.T @ R / N
    inputs = check_inputs(v["features"], y)
    for shrinkage in (0.3, 1e-10):
        B, lam = regularised_scatter(inputs, shrinkage=shrinkage)
        assert lam == shrinkage
        np.testing.assert_allclose(
            B, (1 - lam) * Sw + lam * np.trace(Sw) / D * np.eye(D), rtol=1e-9, atol=1e-12
        )
    B, lam = regularised_scatter(inputs)
    assert 1e-10 <= lam <= 1
    np.testing.assert_allclose(B, (1 - lam) * Sw + lam * np.trace(Sw) / D * np.eye(D), rtol=1e-9, atol=1e-12)


def test_sfda_wide_saturates_with_warning(vectors):
    v = vectors["wide_random"]
    with pytest.warns(TransferabilityWarning, match="sfda: N−C < D"):
        s = get_metric("sfda")(v["features"], v["labels"])
    assert s == pytest.approx(1.0, abs=1e-6)


def test_sfda_constant_within_classes():
    y = np.repeat(np.arange(3), 4)
    separated = np.repeat(np.eye(3, 5), 4, axis=0)
    with pytest.warns(TransferabilityWarning, match="tr\\(Sw\\) = 0"):
        assert get_metric("sfda")(separated, y) == 1.0
    with pytest.warns(TransferabilityWarning, match="all classes coincide"):
        assert np.isnan(get_metric("sfda")(np.ones((12, 5)), y))


def test_sfda_log_form(vectors):
    v = vectors["small_gauss"]
    s, s_log = (quiet("sfda", v["features"], v["labels"], log=log) for log in (False, True))
    assert np.isfinite(s_log) and s_log < np.log(s)  # Jensen: mean log p < log mean p (p not constant)


# --- H-score ---------------------------------------------------------------------------------------


def covariance_of_class_means(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.cov(class_means(X, y)[y].T)  # ddof 1, as tllib


@pytest.mark.parametrize("name", ["small_gauss", "relu_gauss"])
def test_hscore_closed_form_equals_trace_of_pinv(vectors, name):
    v = vectors[name]
    X, y = v["features"].astype(np.float64), v["labels"]
    naive = np.trace(np.linalg.pinv(np.cov(X.T), rcond=1e-15) @ covariance_of_class_means(X, y))
    assert get_metric("hscore")(v["features"], y) == pytest.approx(naive, rel=1e-9)


def test_hscore_reg_equals_sklearn_ledoit_wolf(vectors):
    from sklearn.covariance import LedoitWolf

    v = vectors["small_gauss"]
    X, y = v["features"].astype(np.float64), v["labels"]
    lw = LedoitWolf().fit(X - X.mean(axis=0))
    naive = (1 - lw.shrinkage_) * np.trace(
        np.linalg.pinv(lw.covariance_, rcond=1e-15) @ covariance_of_class_means(X, y)
    )
    assert get_metric("hscore_reg")(v["features"], y) == pytest.approx(naive, rel=1e-12)


def test_hscore_wide_is_c_minus_1_with_rank_warning(vectors):
    v = vectors["wide_random"]
    with pytest.warns(TransferabilityWarning, match="hscore: covariance rank 299 < D = 512"):
        s = get_metric("hscore")(v["features"], v["labels"])
    assert s == pytest.approx(len(np.unique(v["labels"])) - 1, rel=1e-6)


# --- TransRate -------------------------------------------------------------------------------------


def naive_transrate(X: np.ndarray, y: np.ndarray, eps: float = 1e-4) -> float:
    def rate(Z):
        return 0.5 * np.linalg.slogdet(np.eye(Z.shape[1]) + Z.T @ Z / (len(Z) * eps))[1]

    Z = X - X.mean(axis=0)
    classes = np.unique(y)
    return rate(Z) - sum(rate(Z[y == c]) for c in classes) / len(classes)


@pytest.mark.parametrize("name", ["wide_random", "small_gauss"])  # n_c < D (Sylvester side), n_c > D
def test_transrate_equals_direct_slogdet(vectors, name):
    v = vectors[name]
    X, y = v["features"].astype(np.float64), v["labels"]
    s = quiet("transrate", X, y)
    assert s == pytest.approx(naive_transrate(X, y), rel=1e-10)
    assert quiet("transrate", X, y, eps=1e-2) == pytest.approx(naive_transrate(X, y, 1e-2), rel=1e-10)


def test_transrate_warns_in_the_wide_regime(vectors):
    v = vectors["wide_random"]
    with pytest.warns(TransferabilityWarning, match="transrate: most classes have fewer samples than D"):
        get_metric("transrate")(v["features"], v["labels"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferabilityWarning)
        get_metric("transrate")(vectors["small_gauss"]["features"], vectors["small_gauss"]["labels"])


# --- GBC -------------------------------------------------------------------------------------------


def naive_gbc(Z: np.ndarray, y: np.ndarray, *, diagonal: bool = False, scale_log_term: bool = False) -> float:
    """google's pair loop on already-reduced features."""
    stats = []
    for c in np.unique(y):
        var = np.maximum(Z[y == c].var(axis=0), 1e-4)
        stats.append((Z[y == c].mean(axis=0), var if diagonal else var.mean()))
    total = 0.0
    for a, (ma, va) in enumerate(stats):
        for b, (mb, vb) in enumerate(stats):
            if a != b:
                vbar = (va + vb) / 2
                log_term = np.sum(np.log(vbar) - 0.5 * np.log(va) - 0.5 * np.log(vb))
                log_term *= Z.shape[1] if scale_log_term else 1
                total += np.exp(-(np.sum((ma - mb) ** 2 / vbar) / 8 + 0.5 * log_term))
    return -total


@pytest.mark.parametrize("options", [{}, {"gaussian": "diagonal"}, {"scale_log_term": True}])
def test_gbc_full_pca_equals_gbc_on_rotated_centred_features(vectors, options):
    v = vectors["relu_gauss"]  # exact zeros: some per-dimension variances hit the floor
    X, y = v["features"].astype(np.float64), v["labels"]
    Xc = X - X.mean(axis=0)
    V = np.linalg.eigh(Xc.T @ Xc)[1]
    diagonal, scale = options.get("gaussian") == "diagonal", options.get("scale_log_term", False)
    naive = naive_gbc(Xc @ V, y, diagonal=diagonal, scale_log_term=scale)
    assert get_metric("gbc")(v["features"], y, pca_dims=X.shape[1], **options) == pytest.approx(
        naive, rel=1e-9
    )


def test_gbc_fewer_dims_than_pca_dims_warns(vectors):
    v = vectors["small_gauss"]
    X = v["features"][:, :16]
    with pytest.warns(TransferabilityWarning, match="gbc: min\\(N, D\\) = 16 < pca_dims = 64"):
        s = get_metric("gbc")(X, v["labels"])
    Xc = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    assert s == pytest.approx(naive_gbc(Xc, v["labels"]), rel=1e-9)  # all dims kept: PCA is a rotation
