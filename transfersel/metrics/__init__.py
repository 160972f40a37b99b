"""The transferability metric registry.

Adding a metric is adding one module here with one decorated function::

    @register_metric("sfda", description="...", reference="TencentARC/SFDA metrics.py::SFDA_Score")
    def sfda(inputs: Inputs, *, shrinkage: float | None = None) -> float: ...

The function receives validated :class:`~transfersel.metrics._inputs.Inputs` and keyword-only options.
Users call ``get_metric(name)(features, labels, *, logits=None, label_embeddings=None, **options)``.
Third-party packages register metrics through the entry-point group ``transfersel.metrics`` (the entry
point's object is imported; its ``@register_metric`` decorators do the rest).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from transfersel.errors import InputError, TransferabilityWarning

__all__ = [
    "Inputs",
    "Metric",
    "TransferabilityWarning",
    "check_float_matrix",
    "check_inputs",
    "encode_labels",
    "get_metric",
    "linalg",
    "list_metrics",
    "register_metric",
    "resolve_device",
    "score",
    "stratified_permutation",
]

# The public boundary for code outside metrics/: these names are loaded on first use (PEP 562), so that
# ``import transfersel`` stays cheap. ``linalg`` is the float64 linear-algebra helper module.
_PUBLIC = {
    "Inputs": ("_inputs", "Inputs"),
    "check_inputs": ("_inputs", "check_inputs"),
    "check_float_matrix": ("_inputs", "_check_float_matrix"),
    "encode_labels": ("_inputs", "encode_labels"),
    "linalg": ("_linalg", None),
    "resolve_device": ("_linalg", "resolve_device"),
    "stratified_permutation": ("_linalg", "stratified_permutation"),
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    mod = importlib.import_module(f"{__name__}.{module}")
    return mod if attr is None else getattr(mod, attr)


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
        fn: the algorithm, ``fn(inputs, **options) -> float``.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    reference: str
    fn: Callable[..., float]

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
        **options: Any,
    ) -> float:
        """Score ``features`` (N, D) against ``labels`` (N,); higher is better. See the module docs.

        ``device`` ("cpu", "cuda", "auto") is where the float64 Gram products run.
        """
        from transfersel.metrics._inputs import check_inputs

        inputs = check_inputs(
            features, labels, logits=logits, label_embeddings=label_embeddings, device=device
        )
        return self.compute(inputs, **options)

    def compute(self, inputs: Any, **options: Any) -> float:
        """Score already validated :class:`Inputs` (lets several metrics share one Gram)."""
        unknown = set(options) - set(self.options)
        if unknown:
            known = ", ".join(self.options) or "none"
            raise InputError(
                f"{self.name} has no option {', '.join(sorted(unknown))}; its options are: {known}"
            )
        inputs.require(*self.needs, metric=self.name)
        return float(self.fn(inputs, **options))


def register_metric(
    name: str, *, description: str, needs: Iterable[str] = (), reference: str = ""
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator that registers ``fn(inputs, **options) -> float`` under ``name``."""
    bad = set(needs) - {"logits", "label_embeddings"}
    if bad:
        raise ValueError(f"unknown metric input(s) {bad}")

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"metric {name!r} is already registered by {_REGISTRY[name].fn.__module__}")
        _REGISTRY[name] = Metric(name, description, tuple(needs), reference, fn)
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


def list_metrics() -> list[Metric]:
    """All registered metrics, sorted by name."""
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def score(
    features: Any,
    labels: Any,
    metrics: Iterable[str],
    *,
    logits: Any = None,
    label_embeddings: Any = None,
    device: str | None = "cpu",
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Score one feature set with several metrics, validating once and sharing the Gram.

    Args:
        features: (N, D) float32/float64 array or tensor; labels: (N,) any hashable values.
        metrics: metric names.
        options: per-metric keyword options, ``{"nleep": {"seed": 1}}``.

    Returns:
        ``{name: score}``, higher is better.
    """
    from transfersel.metrics._inputs import check_inputs

    inputs = check_inputs(features, labels, logits=logits, label_embeddings=label_embeddings, device=device)
    options = options or {}
    return {m: get_metric(m).compute(inputs, **options.get(m, {})) for m in metrics}
