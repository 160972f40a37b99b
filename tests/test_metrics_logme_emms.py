"""LogME, EMMS and NCE against naive implementations of their definitions (spec §2.2, §2.3, §2.6)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import get_metric
from transfersel.metrics.emms import sparsemax


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------- EMMS


def naive_emms(X: np.ndarray, y: np.ndarray, E: np.ndarray) -> float:
    """Spec §2.2 literally: the N×D2×K label tensor, lstsq with D2 right-hand sides, (N·D2)×K lstsq."""
    N = len(y)
    Y = np.asarray(E, dtype=np.float64)[:, y, :].transpose(1, 2, 0)  # (N, D2, K)
    Y = (Y - Y.mean(axis=0)) / (Y.std(axis=0) + 1e-8)
    x = np.asarray(X, dtype=np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    K, D2 = Y.shape[2], Y.shape[1]
    P = x @ np.linalg.lstsq(x, Y.mean(axis=2), rcond=None)[0]
    lam = sparsemax(np.linalg.lstsq(Y.reshape(-1, K), P.reshape(-1), rcond=None)[0])
    return -(((P - Y @ lam) ** 2).sum() / N * D2)


def emms(v: dict, **options) -> float:
    return get_metric("emms")(v["features"], v["labels"], label_embeddings=v["label_embeddings"], **options)


def test_emms_class_level_form_equals_explicit_projection(vectors):
    v = vectors["small_gauss"]
    assert rel(emms(v), naive_emms(v["features"], v["labels"], v["label_embeddings"])) <= 1e-12


def test_emms_single_encoder_is_plain_least_squares_residual(vectors):
    v = vectors["relu_gauss"]
    E = v["label_embeddings"][:1]
    s = get_metric("emms")(v["features"], v["labels"], label_embeddings=E)
    assert rel(s, naive_emms(v["features"], v["labels"], E)) <= 1e-12


def test_sparsemax_projects_onto_the_simplex():
    rng = np.random.default_rng(0)
    for K in (2, 3, 7):
        for _ in range(20):
            z = rng.normal(scale=2.0, size=K)
            p = sparsemax(z)
            assert p.min() >= 0 and abs(p.sum() - 1) <= 1e-12
            assert np.allclose(sparsemax(z + 5.0), p, atol=1e-12)  # shift invariant
            # optimality: a Euclidean projection satisfies ⟨z − p, q − p⟩ ≤ 0 for every q on the simplex
            q = rng.dirichlet(np.ones(K), size=50)
            assert ((q - p) @ (z - p)).max() <= 1e-12
    assert np.array_equal(sparsemax(np.array([0.2, 0.5, 0.3])), np.array([0.2, 0.5, 0.3]))
    assert np.array_equal(sparsemax(np.array([3.0, 0.0, -1.0])), np.array([1.0, 0.0, 0.0]))
    assert np.array_equal(sparsemax(np.array([-4.2])), np.array([1.0]))


@pytest.mark.parametrize("name", ["small_gauss", "relu_gauss"])
def test_emms_alternation_never_raises_the_residual(vectors, name):
    v = vectors[name]
    scores = [emms(v, steps=s, tol=0.0) for s in range(1, 7)]
    assert (np.diff(scores) >= -1e-12 * np.abs(scores[1:])).all(), scores
    assert scores[-1] > scores[0]  # it does move: the reference's single step is not converged
    converged = emms(v, steps=500)
    assert scores[0] < converged < 0


def test_emms_residual_scale_mean_and_degenerate_regime(vectors):
    v = vectors["small_gauss"]
    D2 = v["label_embeddings"].shape[2]
    assert rel(emms(v, residual_scale="mean"), emms(v) / D2**2) <= 1e-14
    with pytest.warns(TransferabilityWarning, match="emms: N ≤ D"):
        assert emms(vectors["wide_random"]) == 0.0


# ---------------------------------------------------------------- LogME


def naive_logme(X: np.ndarray, y: np.ndarray, variant: str, epsilon: float = 1e-5) -> float:
    """Spec §2.3 per class with explicit vectors and ‖y − Xm‖² (ICML).

    Fixed point: N > D takes the SVD of XᵀX (singular values |λ|, kept above 1e-20: roundoff values of
    a rank-deficient X count, as in the reference) and U = X V / s; N ≤ D the thin SVD of X.
    """
    X = np.asarray(X, dtype=np.float64)
    N, D = X.shape
    if N > D:
        V_, sigma, _ = np.linalg.svd(X.T @ X)
        keep = np.sqrt(sigma) > 1e-10
        sigma = sigma[keep]
        U = X @ V_[:, keep] / np.sqrt(sigma)
    else:
        U, s, _ = np.linalg.svd(X, full_matrices=False)
        sigma = s**2
    s_all, V = np.linalg.eigh(X.T @ X)
    s_all = np.clip(s_all, 0, None)
    evidences = []
    for c in range(y.max() + 1):
        yc = (y == c).astype(np.float64)
        alpha = beta = 1.0
        if variant == "fixed_point":
            z2 = (U.T @ yc) ** 2
            r0 = yc @ yc - z2.sum()
            for _ in range(11):
                t = alpha / beta
                gamma = (sigma / (sigma + t)).sum()
                m2 = (sigma * z2 / (t + sigma) ** 2).sum()
                res2 = (z2 / (1 + sigma / t) ** 2).sum() + r0
                alpha, beta = gamma / (m2 + epsilon), (N - gamma) / (res2 + epsilon)
                if abs(alpha / beta - t) / t <= 1e-3:
                    break
            logdet = np.log(alpha + beta * sigma).sum()
        else:
            b = V.T @ (X.T @ yc)
            lam = 1.0
            for _ in range(11):
                gamma = (s_all / (s_all + lam)).sum()
                m = V @ (b * beta / (alpha + beta * s_all))
                m2 = m @ m + epsilon
                alpha = gamma / m2
                res2 = ((yc - X @ m) ** 2).sum() + epsilon
                beta = (N - gamma) / res2
                if abs(alpha / beta - lam) / lam < 0.01:
                    break
                lam = alpha / beta
            logdet = np.log(alpha + beta * s_all).sum()
        ev = D / 2 * np.log(alpha) + N / 2 * np.log(beta) - logdet / 2
        ev -= beta / 2 * res2 + alpha / 2 * m2 + N / 2 * np.log(2 * np.pi)
        evidences.append(ev / N)
    return float(np.mean(evidences))


def logme_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    y_wide = np.arange(30) % 3
    wide = rng.normal(size=(30, 45)).astype(np.float32) + y_wide[:, None]
    y_tall = np.arange(80) % 4
    base = rng.normal(size=(80, 6)) + y_tall[:, None]
    rank_deficient = np.hstack([base, base[:, :3] + base[:, 3:]])  # N > D, rank 6 of 9
    return {"wide": (wide, y_wide), "rank_deficient": (rank_deficient, y_tall)}


@pytest.mark.parametrize("case", ["wide", "rank_deficient"])
@pytest.mark.parametrize("variant", ["fixed_point", "icml"])
def test_logme_matches_direct_svd_implementation(case, variant):
    X, y = logme_cases()[case]
    s = get_metric("logme")(X, y, variant=variant)
    assert rel(s, naive_logme(X, y, variant)) <= 1e-9


def test_logme_perfect_fit_without_epsilon_warns_nan():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = rng.normal(size=(40, 5)) * (y == 1)[:, None]  # class 0 rows are 0: its target is ⟂ col(X)
    with pytest.warns(TransferabilityWarning, match="logme"):
        assert np.isnan(get_metric("logme")(X, y, variant="icml", epsilon=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(get_metric("logme")(X, y))


# ---------------------------------------------------------------- NCE


def naive_nce(logits: np.ndarray, y: np.ndarray) -> float:
    N, C = len(y), y.max() + 1
    z = [int(np.flatnonzero(row == row.max())[0]) for row in logits]  # first maximum
    joint: dict[tuple[int, int], int] = {}
    for zi, yi in zip(z, y, strict=True):
        joint[zi, int(yi)] = joint.get((zi, int(yi)), 0) + 1
    H = 0.0
    for zv in set(z):
        n_z = sum(joint.get((zv, c), 0) for c in range(C))
        for c in range(C):
            p = joint.get((zv, c), 0) / n_z + 1e-20
            H -= n_z / N * p * np.log(p)
    return -H


@pytest.mark.parametrize("name", ["small_gauss", "wide_random"])
def test_nce_matches_brute_force_counting(vectors, name):
    v = vectors[name]
    s = get_metric("nce")(v["features"], v["labels"], logits=v["logits"])
    assert rel(s, naive_nce(v["logits"], v["labels"])) <= 1e-14


def test_nce_ties_take_the_first_index_and_unused_sources_carry_no_mass():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 3, size=(200, 50)).astype(np.float32)  # many ties; most columns unused
    logits[:, 40:] = -1.0
    y = rng.integers(0, 4, size=200)
    s = get_metric("nce")(rng.normal(size=(200, 3)), y, logits=logits)
    assert rel(s, naive_nce(logits, y)) <= 1e-14
