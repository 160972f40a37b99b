"""``auto``: the one recommended selector (selection spec §5), a pool metric.

``auto`` is the **consensus of the metric library**: over the pool of candidate models of one target
dataset, every component (by default every classification metric transfersel has, on the exact features:
SFDA, LogME, EMMS, H-score, regularised H-score, TransRate, GBC, LEEP, NCE, NLEEP, kNN, PARC, NCTI, ETran;
the linear probe is left out for its cost, 38x a Gram + eigh) is standardised across the pool (``"z"``:
z-scores; ``"rank"``: average ranks scaled to [0, 1]) and a model's score is the weighted mean of its
standardised components. Why a consensus and not a fitted few: on the offline benchmark the metric that
works changes from dataset to dataset (the second-order metrics prefer wide features, which is right where
the wide ImageNet models fine-tune best and wrong where an in-domain narrow model does; the frozen-accuracy
metrics the reverse), so any small subset chosen on some datasets fails on others, while the families'
errors partly cancel in their mean. With equal weights nothing is fitted but the standardisation, so there
is nothing to overfit to the benchmark (``benchmarks/offline/AUTO.md``). The constants live in
``transfersel/selection.json`` under ``"auto"``: ``weights``, ``standardise`` and per-metric ``options``
(LogME's padded evidence), written by ``scripts/fit_auto.py``.

Component names: a registered metric (``"logme"``; a pool metric such as ``"ncti"`` is combined over the
pool first, then standardised like the others), a metric on the features projected on their top-d principal
axes (``"logme@64"``, the metric with ``reduce=64``, spec §2; ``"logme@auto"``: ``reduce="auto"``), or a
prior (``"prior_params"``).

Use it like any pool metric: ``get_metric("auto").components(features, labels, logits=...,
label_embeddings=..., priors=...)`` per model (``priors``: ``{prior_name: value}`` from
:func:`transfersel.priors.priors`), then ``get_metric("auto").combine({model: components})``, which
returns a :class:`Combined`: a ``{model: score}`` dict whose ``note`` says which components it used.
A pool metric's parts appear among the components as ``"ncti.nuc"`` etc.

Missing inputs degrade gracefully: a component that needs source logits (LEEP, NCE), label embeddings
(EMMS) or a prior that was not passed is left out, and the weights are renormalised over the rest (per
model, so a model without a source head is scored on what it has). :func:`combine` says what it used.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "component_values",
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
    options: Mapping[str, Mapping[str, Any]] | None = None,
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
    return scores_from_inputs(inputs, names, priors=priors, options=options)


def scores_from_inputs(
    inputs: Any,
    names: Sequence[str],
    *,
    priors: Mapping[str, float] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, float]:
    """:func:`component_scores` on validated :class:`~transfersel.metrics._inputs.Inputs`.

    ``metric@d`` is the metric with ``reduce=d`` (one projection per d, shared); ``options[metric]`` are its
    keyword options. A pool metric contributes its parts as ``"metric.part"`` (combined over the pool by
    :func:`combine`). Components whose inputs are missing (source logits for LEEP/NCE, label embeddings for
    EMMS, a prior absent from ``priors``) are left out of the result; NaN means the metric ran but could not
    score. ``prior_feature_dim`` falls back to ``log2(D)`` of the features.
    """
    from transfersel.metrics import get_metric

    priors = dict(priors or {})
    priors.setdefault("prior_feature_dim", math.log2(inputs.D))
    options = options or {}
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
        opts = dict(options.get(metric, {}))
        if m.pool:
            parts = m.compute_components(inputs, reduce=d, **opts)
            out.update({f"{name}.{part}": value for part, value in parts.items()})
        else:
            out[name] = m.compute(inputs, reduce=d, **opts)
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
    """The constants of ``auto``: ``weights`` ``{component: w}`` (w > 0), the standardisation, and
    ``options`` ``{metric: {option: value}}`` for its metrics."""

    weights: dict[str, float]
    standardise: str = "rank"
    source: str = ""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        options = {str(k): dict(v) for k, v in doc.get("options", {}).items()}
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
    return AutoConfig(weights, how, str(path), options)


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
    S = np.array([component_values(pool, c, models) for c in names], dtype=np.float64).reshape(
        len(names), len(models)
    )
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


def component_values(pool: Mapping[str, Mapping[str, float]], name: str, models: list[str]) -> list[float]:
    """(M,) values of component ``name``: read off each model, or, for a pool metric given as its parts
    (``"ncti.nuc"``, ...), its pool scores over the models that have all of them (NaN for the others); a
    pool metric given as its pool score (``"ncti"``, e.g. from a table of scores) is read as it is."""
    from transfersel.metrics import list_metrics

    metric = next((m for m in list_metrics(pool=True) if m.name == parse_component(name)[0]), None)
    if metric is None or any(name in pool[m] for m in models):  # a value per model (a pool score as is)
        return [float(pool[m].get(name, math.nan)) for m in models]
    need = [f"{name}.{part}" for part, _ in metric.pool_weights]
    complete = {
        m: {k.split(".", 1)[1]: pool[m][k] for k in need}
        for m in models
        if all(math.isfinite(pool[m].get(k, math.nan)) for k in need)
    }
    pooled = metric.combine(complete) if len(complete) >= 2 else {}
    return [float(pooled.get(m, math.nan)) for m in models]


def _register() -> None:
    """Register ``auto`` with the constants of the packaged ``selection.json`` (not at all if it has none)."""
    try:
        config = load_config()
    except InputError:
        return

    def auto(inputs: Any, *, priors: Mapping[str, float] | None = None) -> dict[str, float]:
        return scores_from_inputs(inputs, config.components, priors=priors, options=config.options)

    def combiner(components: Mapping[str, Mapping[str, float]]) -> Combined:
        return combine(components, weights=config.weights, how=config.standardise)

    register_metric(
        "auto",
        description="the recommended selector: the consensus (weighted mean of pool-standardised scores, "
        f"{config.standardise}) of " + ", ".join(config.components) + " (selection.json); pool-relative",
        reference="transfersel scripts/fit_auto.py (benchmarks/offline/AUTO.md)",
        pool_weights=config.weights,
        combiner=combiner,
    )(auto)


_register()
