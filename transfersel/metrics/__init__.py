"""The transferability metric registry.

Adding a metric is adding one module here with one decorated function::

    @register_metric("sfda", description="...", reference="TencentARC/SFDA metrics.py::SFDA_Score")
    def sfda(inputs: Inputs, *, shrinkage: float | None = None) -> float: ...

The function receives validated :class:`~transfersel.metrics._inputs.Inputs` and keyword-only options.
Users call ``get_metric(name)(features, labels, *, logits=None, label_embeddings=None, reduce=None, **opts)``.

``reducible=True`` marks a metric built on D×D statistics: the registry applies ``reduce`` (None, an int
d or "auto", spec selection.md §2) once, centrally, before the function sees the inputs; other metrics
ignore ``reduce``. ``max_rows=n`` marks a metric whose algorithm cannot stream (spec scale.md §2): above n
rows the registry scores a seeded class-stratified subsample of n rows (``Inputs.subsampled``, seed
``SUBSAMPLE_SEED``) and warns once with the cap and the seed. ``pool_weights={component: weight}`` marks
a pool metric (spec §3): its function returns one model's components, and :meth:`Metric.combine` min–max
normalises each over the candidate models.
Third-party packages register metrics through the entry-point group ``transfersel.metrics`` (the entry
point's object is imported; its ``@register_metric`` decorators do the rest).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import _linalg as linalg
from transfersel.metrics._inputs import (
    SUBSAMPLE_CAP,
    SUBSAMPLE_SEED,
    Inputs,
    check_inputs,
    encode_labels,
    reduce_features,
)
from transfersel.metrics._inputs import _check_float_matrix as check_float_matrix
from transfersel.metrics._linalg import resolve_device, stratified_permutation
from transfersel.metrics._reduce import auto_dim, default_reduce_setting, effective_dim, saturation

__all__ = [
    "Inputs",
    "Metric",
    "SUBSAMPLE_CAP",
    "SUBSAMPLE_SEED",
    "TransferabilityWarning",
    "auto_dim",
    "check_float_matrix",
    "check_inputs",
    "default_reduce_setting",
    "effective_dim",
    "encode_labels",
    "get_metric",
    "linalg",
    "list_metrics",
    "reduce_features",
    "register_metric",
    "resolve_device",
    "saturation",
    "score",
    "stratified_permutation",
]

_REGISTRY: dict[str, Metric] = {}
_LOADED = False


@dataclass(frozen=True)
class Metric:
    """A registered metric: call it like a function, ``metric(features, labels, **options) -> float``.

    Attributes:
        name: registry name (e.g. ``"sfda"``).
        description: one line: what it measures and its range.
        needs: optional inputs it requires, among ``"logits"`` and ``"label_embeddings"``.
        reference: the implementation whose values it reproduces.
        fn: the algorithm, ``fn(inputs, **options) -> float`` (pool metrics: ``-> dict[str, float]``).
        reducible: built on D×D statistics; takes ``reduce`` (applied by the registry).
        pool_weights: for a pool metric, ``((component, weight), ...)`` of :meth:`combine`; empty otherwise.
        combiner: for a pool metric with its own combination (``auto``), ``combiner(components) -> {model:
            score}`` replaces the weighted min–max sum of :meth:`combine`.
        max_rows: for a metric that cannot stream, the row cap above which it scores a subsample.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    reference: str
    fn: Callable[..., Any]
    reducible: bool = False
    pool_weights: tuple[tuple[str, float], ...] = ()
    combiner: Callable[[Mapping[str, Mapping[str, float]]], dict[str, float]] | None = None
    max_rows: int | None = None

    def subsamples(self, n: int) -> bool:
        """True when this metric scores a subsample of N = ``n`` rows (it cannot stream, n > ``max_rows``)."""
        return self.max_rows is not None and n > self.max_rows

    @property
    def pool(self) -> bool:
        """True for a pool-relative metric (its score depends on the candidate models): use
        :meth:`components` per model, then :meth:`combine`."""
        return bool(self.pool_weights)

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options and their defaults."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}

    def __call__(
        self,
        features: Any,
        labels: Any,
        *,
        logits: Any = None,
        label_embeddings: Any = None,
        device: str | None = "cpu",
        reduce: int | str | None = None,
        **options: Any,
    ) -> float:
        """Score ``features`` (N, D) against ``labels`` (N,); higher is better. See the module docs.

        ``device`` ("cpu", "cuda", "auto") is where the float64 Gram products run. ``reduce`` (None, d,
        "auto") projects the centred features on their top-d principal axes first (reducible metrics only).
        """
        inputs = check_inputs(
            features, labels, logits=logits, label_embeddings=label_embeddings, device=device
        )
        return self.compute(inputs, reduce=reduce, **options)

    def compute(self, inputs: Inputs, *, reduce: int | str | None = None, **options: Any) -> float:
        """Score already validated :class:`Inputs` (lets several metrics share one Gram and projection)."""
        if self.pool:
            raise InputError(
                f"{self.name} is a pool metric (its score is relative to the candidate models); use "
                f"get_metric({self.name!r}).components(...) per model and .combine(...), "
                "or `transfersel rank`"
            )
        return float(self._run(inputs, reduce, options))

    def components(
        self,
        features: Any,
        labels: Any,
        *,
        logits: Any = None,
        label_embeddings: Any = None,
        device: str | None = "cpu",
        reduce: int | str | None = None,
        **options: Any,
    ) -> dict[str, float]:
        """One model's sub-scores ``{component: value}`` of a pool metric (in the order of ``pool_weights``).

        Args:
            features: (N, D) float32/float64; labels: (N,) any sortable hashable values; logits (N, K) and
                label_embeddings (K, C, D2) for the pool metrics that use them (``auto``).
        """
        inputs = check_inputs(
            features, labels, logits=logits, label_embeddings=label_embeddings, device=device
        )
        return self.compute_components(inputs, reduce=reduce, **options)

    def compute_components(
        self, inputs: Inputs, *, reduce: int | str | None = None, **options: Any
    ) -> dict[str, float]:
        """:meth:`components` on already validated :class:`Inputs`."""
        if not self.pool:
            raise InputError(f"{self.name} is not a pool metric; call it for its score")
        return {k: float(v) for k, v in self._run(inputs, reduce, options).items()}

    def combine(self, components: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """Pool scores ``{model: Σ_k w_k·mm(c_k)}`` from ``{model: components}``, higher is better.

        ``mm(v) = (v − min)/(max − min)`` over the models of this pool; a component equal for every model
        (max = min, which includes non-finite spreads) carries no ranking information and gives 0 to all.
        A model with a non-finite component gets NaN. Raises :class:`InputError` for a pool of fewer than
        two models or a missing component.
        """
        if not self.pool:
            raise InputError(f"{self.name} is not a pool metric; it has no combine()")
        if len(components) < 2:
            raise InputError(
                f"{self.name} is relative to a pool of candidate models; got {len(components)} model(s): "
                "score at least 2 models together"
            )
        if self.combiner is not None:
            return self.combiner(components)
        models = list(components)
        total = np.zeros(len(models))
        for key, weight in self.pool_weights:
            try:
                v = np.array([float(components[m][key]) for m in models])
            except KeyError:
                raise InputError(f"{self.name}: a model lacks component {key!r}; pass components()") from None
            finite = v[np.isfinite(v)]
            spread = float(finite.max() - finite.min()) if finite.size else 0.0
            if spread == 0:
                total += np.where(np.isfinite(v), 0.0, np.nan)
            else:
                total += weight * (v - finite.min()) / spread
        return {m: float(t) for m, t in zip(models, total, strict=True)}

    def describe_reduce(self, n: int, d: int, c: int, reduce: int | str | None) -> int | None:
        """The dimension this metric scores for ``reduce`` on N×D features with C classes, or ``None``
        when it scores the features as they are (``reduce`` None, d ≥ D, or a metric not built on D×D
        statistics). State it beside every score."""
        return effective_dim(reduce, n, d, c) if self.reducible else None

    def _run(self, inputs: Inputs, reduce: int | str | None, options: dict[str, Any]) -> Any:
        """The metric on ``inputs``, computed once per (reduce, options) and remembered on them; a repeat
        returns the same value and replays the warnings of the first computation."""
        unknown = set(options) - set(self.options)
        if unknown:
            known = ", ".join(self.options) or "none"
            raise InputError(
                f"{self.name} has no option {', '.join(sorted(unknown))}; its options are: {known}"
            )
        key = (self.name, repr(reduce), repr(sorted(options.items())))
        if key not in inputs._results:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                value = self._compute(inputs, reduce, options)
            inputs._results[key] = (value, said)
        value, said = inputs._results[key]
        for w in said:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return value

    def _compute(self, inputs: Inputs, reduce: int | str | None, options: dict[str, Any]) -> Any:
        inputs.require(*self.needs, metric=self.name)
        if self.max_rows is not None and self.subsamples(inputs.N):
            warnings.warn(
                f"{self.name}: N = {inputs.N} rows is above its cap of {self.max_rows} (it cannot stream); "
                f"scoring a class-stratified subsample of {self.max_rows} rows, seed {SUBSAMPLE_SEED}",
                TransferabilityWarning,
                stacklevel=4,
            )
            inputs = inputs.subsampled(self.max_rows, SUBSAMPLE_SEED)
        if self.reducible:
            inputs = inputs.reduced(reduce)
        else:
            effective_dim(reduce, inputs.N, inputs.D, inputs.C)  # still reject a malformed value
        try:
            return self.fn(inputs, **options)
        except (ArithmeticError, ValueError) as exc:  # LinAlgError is a ValueError: a last line of defence
            if isinstance(exc, InputError):
                raise
            raise InputError(
                f"{self.name}: numerical failure on these features ({type(exc).__name__}: {exc}); "
                "check them for extreme scale, constant or duplicated columns"
            ) from None


def register_metric(
    name: str,
    *,
    description: str,
    needs: Iterable[str] = (),
    reference: str = "",
    reducible: bool = False,
    pool_weights: Mapping[str, float] | None = None,
    combiner: Callable[[Mapping[str, Mapping[str, float]]], dict[str, float]] | None = None,
    max_rows: int | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers ``fn(inputs, **options) -> float`` under ``name``.

    ``reducible``: the metric is built on D×D statistics and takes ``reduce``. ``pool_weights``: the
    function returns ``{component: value}`` and the pool score is ``Σ w·mm(component)``, or
    ``combiner(components)`` when given. ``max_rows``: score a seeded stratified subsample above this
    many rows (for an algorithm that cannot stream; usually ``SUBSAMPLE_CAP``).
    """
    bad = set(needs) - {"logits", "label_embeddings"}
    if bad:
        raise ValueError(f"unknown metric input(s) {bad}")

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"metric {name!r} is already registered by {_REGISTRY[name].fn.__module__}")
        weights = tuple((k, float(w)) for k, w in (pool_weights or {}).items())
        _REGISTRY[name] = Metric(
            name, description, tuple(needs), reference, fn, reducible, weights, combiner, max_rows
        )
        return fn

    return deco


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    for ep in entry_points(group="transfersel.metrics"):
        ep.load()


def get_metric(name: str) -> Metric:
    """Return the registered metric ``name``; raises :class:`InputError` listing the known names."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(_REGISTRY))}") from None


def list_metrics(*, pool: bool | None = False) -> list[Metric]:
    """Registered metrics sorted by name: the plain ones (default), the pool ones (``pool=True``: score
    them with ``components``/``combine``) or all (``pool=None``)."""
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY) if pool is None or _REGISTRY[k].pool == pool]


def score(
    features: Any,
    labels: Any,
    metrics: Iterable[str],
    *,
    logits: Any = None,
    label_embeddings: Any = None,
    device: str | None = "cpu",
    reduce: int | str | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Score one feature set with several metrics, validating once and sharing the Gram.

    Args:
        features: (N, D) float32/float64 array or tensor; labels: (N,) any hashable values.
        metrics: metric names.
        reduce: None, d or "auto" for the reducible metrics (one shared projection); the others ignore it.
        options: per-metric keyword options, ``{"nleep": {"seed": 1}}``.

    Returns:
        ``{name: score}``, higher is better.
    """
    inputs = check_inputs(features, labels, logits=logits, label_embeddings=label_embeddings, device=device)
    options = options or {}
    return {m: get_metric(m).compute(inputs, reduce=reduce, **options.get(m, {})) for m in metrics}
