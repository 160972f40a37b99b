"""NLEEP: Gaussian-mixture LEEP (Li et al., CVPR'21), spec §2.4.

The source "classifier" is a K = component_ratio·C component full-covariance Gaussian mixture
fitted to the PCA-80 % scores of the features; its posteriors p(z|x) replace the source softmax
in LEEP's expected empirical prediction.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.special

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import register_metric
from transfersel.metrics._inputs import SUBSAMPLE_CAP, Inputs
from transfersel.metrics._linalg import EPS64, pca_exact
from transfersel.metrics.leep import expected_empirical_prediction, mean_eep

KMEANS_ITERS = 100  # Lloyd iterations: enough to converge on every regime we measured (spec §2.4)
TOL = 1e-3  # scikit-learn's EM tolerance on the mean log-likelihood


# faiss computes distances in float32: a row norm this many times the median one swamps the others
FAISS_MAX_SPREAD = 1e6


def kmeans_labels(Z: np.ndarray, K: int, seed: int) -> np.ndarray:
    """(N,) hard k-means assignments of the rows of ``Z`` (N, d) (random-sample seeding + Lloyd).

    k-means is invariant to scaling Z, so Z is first rescaled by an exact power of two to
    ``max|Z| ≈ 1`` (faiss's float32 squares stay finite; in-range results are unchanged). faiss runs
    it unless it would abort or lose the points: non-finite or all-equal rows, fewer distinct rows
    than K, or one row ≥ 1e6 × the median norm; then :func:`kmeans_numpy` (float64) does.
    """
    peak = float(np.abs(Z).max())
    Zs = np.ldexp(Z, -int(np.round(np.log2(peak)))) if np.isfinite(peak) and peak > 0 else Z
    Zf = np.ascontiguousarray(Zs, dtype=np.float32)
    norms = np.linalg.norm(Zs, axis=1)
    median = float(np.median(norms))
    if (
        not np.isfinite(Zf).all()
        or median == 0
        or norms.max() > FAISS_MAX_SPREAD * median
        or len(np.unique(Zf, axis=0)) < K
    ):
        return kmeans_numpy(np.asarray(Zs, dtype=np.float64), K, seed)
    import faiss

    km = faiss.Kmeans(
        Z.shape[1],
        K,
        niter=KMEANS_ITERS,
        seed=seed,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, Z.shape[0]),  # never subsample the points
    )
    km.train(Zf)
    _, labels = km.index.search(Zf, 1)
    return labels.ravel().astype(np.int64)


def kmeans_numpy(Z: np.ndarray, K: int, seed: int) -> np.ndarray:
    """(N,) float64 Lloyd k-means of the rows of ``Z``: K distinct rows drawn as seeds (fewer if Z has
    fewer distinct rows; the rest start on the first), ``KMEANS_ITERS`` steps, an emptied cluster
    keeps its centroid."""
    rng = np.random.default_rng(seed)
    _, first = np.unique(Z, axis=0, return_index=True)
    picks = rng.permutation(first)[:K]
    centroids = Z[np.concatenate([picks, np.full(K - len(picks), picks[0])])].copy()
    labels = np.full(len(Z), -1)
    for _ in range(KMEANS_ITERS):
        d2 = (Z * Z).sum(axis=1)[:, None] - 2 * Z @ centroids.T + (centroids * centroids).sum(axis=1)
        new = d2.argmin(axis=1)
        if (new == labels).all():
            break
        labels = new
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, Z)
        counts = np.bincount(labels, minlength=K)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return labels.astype(np.int64)


GEMM_BLOCK = 1 << 23  # float64 entries of whitened coordinates computed per GEMM (64 MB)
ACTIVE = 1e-10  # responsibilities below this are left out of a component's covariance (spec §7.4)


# (K, d, d) float64 matrices alive at once in EM: the covariances, their Cholesky factors, the new inverse
# factors and the previous round's
MIXTURE_MATRICES = 4


def available_memory() -> int | None:
    """Bytes of physical memory available now (Linux ``MemAvailable``), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_mixture_memory(K: int, d: int, *, variance: float, component_ratio: int) -> None:
    """Refuse, before any work, a mixture whose covariances alone exceed the available memory (it would
    be killed by the kernel, not fail): K full d×d covariances scale with K·d², not with N."""
    need = MIXTURE_MATRICES * K * d * d * 8
    free = available_memory()
    if free is not None and need > free:
        raise InputError(
            f"nleep: {K} full-covariance components on d = {d} PCA dimensions need about {need / 2**30:.1f}"
            f" GiB, {free / 2**30:.1f} GiB is available; lower the PCA's variance share "
            f"(-m nleep:variance=, now {variance:g}) or the components per class (component_ratio=, now "
            f"{component_ratio})"
        )


class SingularCovariance(Exception):
    """A component covariance is not numerically positive definite."""


def m_step(Z: np.ndarray, R: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixture parameters from responsibilities ``R`` (N, K): log weights (K,), means (K, d) and the
    inverse Cholesky factors ``P_k = L_k⁻¹`` (K, d, d) of
    ``Σ_k = Σ_i R_ik (z_i − μ_k)(z_i − μ_k)ᵀ / n_k + reg_covar·I = L_k L_kᵀ``.

    Each covariance is one GEMM over the points with ``R_ik ≥ ACTIVE`` (after a few iterations most
    points have one to three active components), centred on ``μ_k`` first (no cancellation).
    """
    N, d = Z.shape
    n = R.sum(axis=0) + 10 * EPS64  # scikit-learn's guard against empty components
    means = (R.T @ Z) / n[:, None]
    cov = np.empty((R.shape[1], d, d))
    for k in range(R.shape[1]):
        active = np.flatnonzero(R[:, k] >= ACTIVE)
        diff = Z[active] - means[k]
        # einsum's own loop, not BLAS: these GEMMs are tiny and threaded BLAS stalls on them
        cov[k] = np.einsum("ni,nj->ij", diff * R[active, k, None], diff, optimize=False) / n[k]
    cov.reshape(len(n), -1)[:, :: d + 1] += reg_covar
    return np.log(n / n.sum()), means, inverse_cholesky(cov)


def inverse_cholesky(cov: np.ndarray) -> np.ndarray:
    """(K, d, d) ``L_k⁻¹`` for the Cholesky factors ``Σ_k = L_k L_kᵀ``; raises :class:`SingularCovariance`.

    Batched in torch: NumPy's LAPACK handles each small matrix with threaded BLAS, which stalls
    for seconds per matrix when the cores are shared.
    """
    import torch

    L, info = torch.linalg.cholesky_ex(torch.from_numpy(cov))
    if info.any():
        raise SingularCovariance(f"{int((info > 0).sum())} covariance(s) not positive definite")
    eye = torch.eye(cov.shape[1], dtype=L.dtype).expand_as(L)
    return torch.linalg.solve_triangular(L, eye, upper=False).numpy()


def e_step(Z: np.ndarray, log_w: np.ndarray, means: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, float]:
    """Posteriors ``R = softmax_k ℓ`` (N, K) with ``ℓ_ik = log π_k + log 𝒩(z_i | μ_k, Σ_k)``, and the
    mean log-likelihood ``mean_i logsumexp_k ℓ_ik``; ``P_k = L_k⁻¹`` whitens component k.

    ``L_k⁻¹(z_i − μ_k) = P_k z_i − P_k μ_k`` for a block of components is one wide GEMM
    (scikit-learn's form; Z is centred by the PCA, so the subtraction loses nothing that matters).
    """
    N, d = Z.shape
    K = len(log_w)
    log_det = -2 * np.log(np.abs(P.diagonal(axis1=1, axis2=2))).sum(axis=1)  # log det Σ_k
    Pt = P.transpose(0, 2, 1)  # (K, d, d): z P_kᵀ are the whitened coordinates of z
    shift = np.einsum("kd,kde->ke", means, Pt)  # μ_k P_kᵀ
    ell = np.empty((N, K))
    step = max(1, GEMM_BLOCK // (N * d))
    for k0 in range(0, K, step):
        ks = slice(k0, min(k0 + step, K))
        W = Z @ Pt[ks].transpose(1, 0, 2).reshape(d, -1)  # (N, k·d)
        W = W.reshape(N, -1, d) - shift[ks]
        ell[:, ks] = np.einsum("ikd,ikd->ik", W, W)  # Mahalanobis distances
    ell = log_w - 0.5 * (d * math.log(2 * math.pi) + log_det + ell)
    lse = scipy.special.logsumexp(ell, axis=1, keepdims=True)
    ell -= lse
    return np.exp(ell, out=ell), float(lse.mean())


def gmm_posteriors(
    Z: np.ndarray, labels: np.ndarray, K: int, *, reg_covar: float, max_iter: int, tol: float = TOL
) -> np.ndarray:
    """EM for a ``K``-component full-covariance Gaussian mixture started from hard ``labels`` (N,).

    scikit-learn's ``GaussianMixture`` schedule: an M-step from the one-hot labels, then up to
    ``max_iter`` E/M rounds until the mean log-likelihood moves by less than ``tol``, then a final
    E-step. Returns the (N, K) float64 posteriors p(z|x); raises :class:`SingularCovariance`.
    """
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    R = np.zeros((len(Z), K))
    R[np.arange(len(Z)), labels] = 1.0
    params = m_step(Z, R, reg_covar)
    ll = -math.inf
    for _ in range(max_iter):
        ll_prev = ll
        R, ll = e_step(Z, *params)
        params = m_step(Z, R, reg_covar)
        if abs(ll - ll_prev) < tol:
            break
    R, _ = e_step(Z, *params)
    return R


@register_metric(
    "nleep",
    max_rows=SUBSAMPLE_CAP,  # the algorithm cannot stream: a seeded stratified subsample above it
    description="Mean expected empirical prediction of a K=5C Gaussian mixture on PCA-80% features; "
    "in (0, 1] (log=True: ≤ 0)",
    reference="TencentARC/SFDA metrics.py::NLEEP (default); google stable_transfer nleep.py (log=True)",
)
def nleep(
    inputs: Inputs,
    *,
    seed: int = 0,
    component_ratio: int = 5,
    log: bool = False,
    variance: float = 0.8,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
) -> float:
    if not 0 < variance < 1:
        raise InputError(f"nleep variance must be a fraction in (0, 1), got {variance}")
    if int(component_ratio) != component_ratio or component_ratio < 1:
        raise InputError(f"nleep component_ratio must be a positive integer, got {component_ratio}")
    inputs = inputs.normalised()  # the PCA, k-means and EM are scale-free up to the reg_covar ridge
    N, C = inputs.N, inputs.C
    if (inputs.X.max(axis=0) == inputs.X.min(axis=0)).all():
        warnings.warn(
            "nleep: all feature rows are equal (zero variance), the PCA and mixture are undefined; "
            "returning nan",
            TransferabilityWarning,
            stacklevel=3,
        )
        return float("nan")
    # 1. PCA to the smallest d whose cumulative explained variance exceeds `variance` (no whitening)
    if N >= inputs.D:
        Z, _ = pca_exact(inputs.X, float(variance), mean=inputs.mean, centered_gram=inputs.centered_gram)
    else:
        Z, _ = pca_exact(inputs.X, float(variance), mean=inputs.mean)
    d = Z.shape[1]
    K = min(int(component_ratio) * C, N)
    if N / K <= d:
        warnings.warn(
            f"nleep: N/K = {N / K:.3g} ≤ d = {d}: components have singular covariances and EM "
            "collapses to hard, cluster-pure posteriors (the score approaches the cluster purity)",
            TransferabilityWarning,
            stacklevel=3,
        )
    check_mixture_memory(K, d, variance=float(variance), component_ratio=int(component_ratio))
    # 2. GMM initialised from converged k-means; float64 EM, retried with a larger reg_covar if a
    #    covariance is still singular.
    labels = kmeans_labels(Z, K, seed)
    for attempt in range(4):
        try:
            R = gmm_posteriors(Z, labels, K, reg_covar=reg_covar * 10**attempt, max_iter=max_iter)
            break
        except SingularCovariance:
            continue
    else:
        warnings.warn(
            f"nleep: GMM covariances are singular even with reg_covar = {reg_covar * 1e3:g}; returning nan",
            TransferabilityWarning,
            stacklevel=3,
        )
        return float("nan")
    if attempt:
        warnings.warn(
            f"nleep: GMM covariance not positive definite with reg_covar = {reg_covar:g}; "
            f"used {reg_covar * 10**attempt:g}",
            TransferabilityWarning,
            stacklevel=3,
        )
    # 3–4. LEEP with the mixture posteriors as the source distribution
    eep = expected_empirical_prediction(R, inputs.y, C)
    return mean_eep(eep, C, log=log, metric="nleep")
