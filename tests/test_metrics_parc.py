"""PARC (spec §2.10): the Mann–Whitney form equals scipy's Spearman on the full RDM, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import get_metric
from transfersel.metrics import parc as parc_module
from transfersel.metrics.parc import _rdm_blocks, spearman_with_label_rdm


def full_upper_triangles(F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same RDM values, assembled whole, and the binary label RDM over the upper triangle."""
    blocks = list(_rdm_blocks(F, y))
    return np.concatenate([v for v, _ in blocks]), ~np.concatenate([s for _, s in blocks])


@pytest.mark.parametrize("blocked", [False, True])
def test_mann_whitney_equals_scipy_spearman_with_ties(vectors, monkeypatch, blocked):
    v = vectors["relu_gauss"]
    F = v["features"][:150, :32].astype(np.float64)
    y = v["labels"][:150]
    # duplicate rows (same and different classes) make many exactly tied RDM values
    F = np.concatenate([F, F[:20], F[30:40]])
    y = np.concatenate([y, y[:20], (y[30:40] + 1) % (y.max() + 1)])
    if blocked:  # several row blocks and several hash partitions for the tie count
        monkeypatch.setattr(parc_module, "BLOCK_VALUES", 500)
        monkeypatch.setattr(parc_module, "TIE_VALUES", 3000)
    values, different = full_upper_triangles(F, y)
    assert len(values) - len(np.unique(values)) > 100  # the ties are really there
    expected = scipy.stats.spearmanr(values, different.astype(float)).statistic
    assert spearman_with_label_rdm(F, y) == pytest.approx(expected, rel=0, abs=1e-10)


def test_subsampling_above_max_samples_is_stratified_and_warns(vectors):
    v = vectors["mid_gauss"]
    with pytest.warns(TransferabilityWarning, match="max_samples"):
        s = get_metric("parc")(v["features"], v["labels"], max_samples=1000)
    full = v["reference"]["parc_exact_ties"]
    assert np.isfinite(s) and abs(s - full) < 0.1 * abs(full)  # a half-size sample keeps the score
