"""``auto``: the one recommended selector (selection spec §5), a pool metric.

A model's **components** are the scores of a few metrics (some on PCA-reduced features) and, when the zoo
gives them, target-free priors (:mod:`transfersel.priors`). Over the pool of candidate models of one
target dataset, ``combine`` standardises each component (``"rank"``: average ranks scaled to [0, 1];
``"z"``: z-scores) and returns, per model, the weighted mean of its standardised components. Which
components, their weights and the standardisation are fitted leave-one-dataset-out on the offline benchmark
by ``scripts/fit_auto.py`` and stored in ``transfersel/selection.json`` under ``"auto"``.

Component names: a registered metric (``"logme"``), a metric on the features projected on their top-d
principal axes (``"logme@64"``, the metric with ``reduce=64``, spec §2; ``"logme@auto"``: ``reduce="auto"``),
or a prior (``"prior_params"``).

Use it like any pool metric: ``get_metric("auto").components(features, labels, logits=...,
label_embeddings=..., priors=...)`` per model (``priors``: ``{prior_name: value}`` from
:func:`transfersel.priors.priors`), then ``get_metric("auto").combine({model: components})``, which
returns a :class:`Combined`: a ``{model: score}`` dict whose ``note`` says which components it used.

Missing inputs degrade gracefully: a component that needs source logits (LEEP, NCE), label embeddings
(EMMS) or a prior that was not passed is left out, and the weights are renormalised over the rest (per
model, so a model without a source head is scored on what it has). :func:`combine` says what it used.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.errors import InputError
from transfersel.metrics import register_metric
from transfersel.metrics._reduce import SELECTION_FILE

__all__ = [
    "SELECTION_FILE",
    "AutoConfig",
    "Combined",
    "combine",
    "component_scores",
    "load_config",
    "parse_component",
    "standardise",
]

STANDARDISE = ("rank", "z")


def parse_component(name: str) -> tuple[str, int | str | None]:
    """``"logme@64"`` -> ``("logme", 64)``, ``"logme@auto"`` -> ``("logme", "auto")``, ``"logme"`` ->
    ``("logme", None)``; priors -> ``(name, None)``. The part after ``@`` is the metric's ``reduce``."""
    metric, sep, d = name.partition("@")
    if not sep:
        return metric, None
    if d == "auto":
        return metric, d
    if not d.isdigit() or int(d) < 1:
        raise InputError(
            f"component {name!r}: the part after '@' must be a PCA dimension d >= 1 or 'auto', e.g. logme@64"
        )
    return metric, int(d)


def component_scores(
    features: Any,
    labels: Any,
    names: Sequence[str],
    *,
    logits: Any = None,
    label_embeddings: Any = None,
    priors: Mapping[str, float] | None = None,
    device: str | None = "cpu",
) -> dict[str, float]:
    """Score one model's ``features`` (N, D) and ``labels`` (N,) on every component in ``names``.

    ``logits`` (N, K) and ``label_embeddings`` (K, C, D2) are optional; see :func:`scores_from_inputs`.

    Returns:
        ``{component: score}`` for the components that could be computed, in ``names`` order.
    """
    from transfersel.metrics._inputs import check_inputs

    logits = None if logits is None or np.asarray(logits).shape[-1] == 0 else logits
    inputs = check_inputs(features, labels, logits=logits, label_embeddings=label_embeddings, device=device)
    return scores_from_inputs(inputs, names, priors=priors)


def scores_from_inputs(
    inputs: Any, names: Sequence[str], *, priors: Mapping[str, float] | None = None
) -> dict[str, float]:
    """:func:`component_scores` on validated :class:`~transfersel.metrics._inputs.Inputs`.

    ``metric@d`` is the metric with ``reduce=d`` (one projection per d, shared). Components whose inputs
    are missing (source logits for LEEP/NCE, label embeddings for EMMS, a prior absent from ``priors``) are
    left out of the result; NaN means the metric ran but could not score. ``prior_feature_dim`` falls back
    to ``log2(D)`` of the features.
    """
    from transfersel.metrics import get_metric

    priors = dict(priors or {})
    priors.setdefault("prior_feature_dim", math.log2(inputs.D))
    out: dict[str, float] = {}
    for name in names:
        metric, d = parse_component(name)
        if metric.startswith("prior_"):
            if metric in priors:
                out[name] = float(priors[metric])
            continue
        m = get_metric(metric)
        if any(getattr(inputs, need) is None for need in m.needs):
            continue
        out[name] = m.compute(inputs, reduce=d)
    return out


def standardise(values: Sequence[float], *, how: str = "rank") -> np.ndarray:
    """Pool-standardised ``(M,)`` scores of ``values`` ``(M,)``.

    ``"rank"``: average ranks scaled to [0, 1] (ties share their mean rank); ``"z"``: ``(v − mean)/sd``.
    NaN stays NaN; a constant component (an all-tie) gives 0.5 (rank) or 0 (z) to every model.
    """
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    out = np.full_like(v, np.nan)
    ok = np.isfinite(v)
    if ok.sum() == 0:
        return out
    if how == "rank":
        r = rankdata(v[ok])
        out[ok] = (r - 1) / (ok.sum() - 1) if ok.sum() > 1 else 0.5
    elif how == "z":
        sd = v[ok].std()
        out[ok] = (v[ok] - v[ok].mean()) / sd if sd > 0 else 0.0
    else:
        raise InputError(f"standardisation {how!r} is unknown; use one of {', '.join(STANDARDISE)}")
    return out


@dataclass(frozen=True)
class AutoConfig:
    """The fitted constants of ``auto``: ``weights`` ``{component: w}`` (w > 0) and the standardisation."""

    weights: dict[str, float]
    standardise: str = "rank"
    source: str = ""

    @property
    def components(self) -> list[str]:
        return list(self.weights)


def load_config(path: str | Path | None = None) -> AutoConfig:
    """``auto``'s constants from ``selection.json`` (default: the packaged file), key ``"auto"``."""
    path = Path(path) if path is not None else SELECTION_FILE
    try:
        doc = json.loads(path.read_text())["auto"]
        weights = {str(k): float(v) for k, v in doc["weights"].items()}
        how = str(doc.get("standardise", "rank"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"{path} has no valid 'auto' entry ({type(exc).__name__}: {exc}); "
            "refit it with python scripts/fit_auto.py"
        ) from None
    if not weights or any(not math.isfinite(w) or w <= 0 for w in weights.values()):
        raise InputError(f"{path}: 'auto' weights must be positive numbers; refit with scripts/fit_auto.py")
    if how not in STANDARDISE:
        raise InputError(f"{path}: 'auto' standardise must be one of {', '.join(STANDARDISE)}, got {how!r}")
    for name in weights:
        parse_component(name)
    return AutoConfig(weights, how, str(path))


class Combined(dict):
    """``auto`` over one pool: ``{model: score}`` (a dict), plus what it used.

    ``used``: the components that scored at least one model; ``missing``: ``{component: [models]}`` for the
    components some models lack (their weights were renormalised over the rest); :attr:`note`: one line.
    """

    def __init__(
        self, scores: Mapping[str, float], used: tuple[str, ...], missing: dict[str, list[str]]
    ) -> None:
        super().__init__(scores)
        self.used = used
        self.missing = missing

    @property
    def note(self) -> str:
        text = "auto used " + (", ".join(self.used) or "no component")
        if self.missing:
            parts = [
                f"{c} (for {len(ms)} model{'s' if len(ms) > 1 else ''})" if c in self.used else c
                for c, ms in self.missing.items()
            ]
            text += "; without " + ", ".join(parts) + ", weights renormalised over the rest"
        return text


def combine(
    pool: Mapping[str, Mapping[str, float]],
    *,
    weights: Mapping[str, float],
    how: str = "rank",
) -> Combined:
    """Weighted mean of pool-standardised components, per model.

    Args:
        pool: ``{model: {component: score}}`` for every candidate model of one target dataset (≥ 2 models);
            a component absent or NaN for a model is left out of that model's mean.
        weights: ``{component: weight > 0}``; components in ``pool`` but not here are ignored.
        how: ``"rank"`` or ``"z"`` (:func:`standardise`).

    Returns:
        :class:`Combined`; a model with none of the weighted components scores NaN (ranked last).
    """
    models = list(pool)
    if len(models) < 2:
        raise InputError(
            f"auto ranks a pool of candidate models and got {len(models)}; score at least 2 models together"
        )
    W = np.array([float(w) for w in weights.values()])
    names = list(weights)
    S = np.array(
        [[float(pool[m].get(c, math.nan)) for m in models] for c in names], dtype=np.float64
    ).reshape(len(names), len(models))
    Z = np.stack([standardise(row, how=how) for row in S]) if names else S
    ok = np.isfinite(Z)
    wsum = (W[:, None] * ok).sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        total = np.where(ok, Z * W[:, None], 0.0).sum(axis=0) / wsum
    scores = {m: float(v) if w > 0 else math.nan for m, v, w in zip(models, total, wsum, strict=True)}
    used = tuple(c for c, row in zip(names, ok, strict=True) if row.any())
    missing = {
        c: [m for m, good in zip(models, row, strict=True) if not good]
        for c, row in zip(names, ok, strict=True)
        if not row.all()
    }
    return Combined(scores, used, missing)


def _register() -> None:
    """Register ``auto`` with the constants of the packaged ``selection.json`` (not at all if it has none)."""
    try:
        config = load_config()
    except InputError:
        return

    def auto(inputs: Any, *, priors: Mapping[str, float] | None = None) -> dict[str, float]:
        return scores_from_inputs(inputs, config.components, priors=priors)

    def combiner(components: Mapping[str, Mapping[str, float]]) -> Combined:
        return combine(components, weights=config.weights, how=config.standardise)

    register_metric(
        "auto",
        description="the recommended selector: equal-weight mean of pool-standardised "
        + ", ".join(config.components)
        + " (fitted leave one dataset out, selection.json); pool-relative",
        reference="transfersel scripts/fit_auto.py (benchmarks/offline/AUTO.md)",
        pool_weights=config.weights,
        combiner=combiner,
    )(auto)


_register()
