"""LogME for rank(X) < D (LogME issue #23): ``variant="padded"`` is the exact evidence."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transfersel.errors import TransferabilityWarning
from transfersel.metrics import get_metric


def logme(f, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferabilityWarning)
        return get_metric("logme")(f, y, **kw)


def test_zero_features_do_not_change_the_exact_evidence(vectors):
    """A feature that is 0 for every sample cannot change the evidence (its weight's prior integrates
    to 1); the published evidence gains ½·log α per such column, the padded one does not."""
    v = vectors["small_gauss"]
    f, y = v["features"], v["labels"]
    wider = np.hstack([f, np.zeros((len(f), 100), dtype=f.dtype)])
    assert logme(wider, y, variant="padded") == pytest.approx(logme(f, y, variant="padded"), rel=1e-9)
    assert logme(wider, y) > logme(f, y) + 0.01


def test_padded_equals_published_for_full_rank_and_default_is_published(vectors):
    v = vectors["mid_gauss"]  # N > D, full rank: nothing to pad
    assert logme(v["features"], v["labels"], variant="padded") == pytest.approx(
        logme(v["features"], v["labels"]), rel=1e-12
    )
    w = vectors["wide_random"]  # N < D: the default stays the published value, the padded one differs
    assert logme(w["features"], w["labels"]) == pytest.approx(w["reference"]["logme"], rel=1e-6)
    padded = logme(w["features"], w["labels"], variant="padded")
    assert padded == pytest.approx(w["reference"]["logme_icml"], abs=1e-3)  # ICML'21 code pads too
