"""Target-free priors (selection spec §4): what a model's card predicts before any target image is seen.

Each prior is one number per zoo entry, **higher = predicted to fine-tune better**, like every metric score:

* ``prior_params``: ``log10`` of the parameter count. The zoo entry's ``params`` when it gives one, else
  counted from the loaded model (its parameters; for graphs that keep their weights as buffers, e.g.
  TorchScript converted from TFLite, its buffers other than BatchNorm statistics). Bigger models transfer
  better on the standard benchmark.
* ``prior_feature_dim``: ``log2`` of the feature width D (``feature_dim``, else the cached features' D).
* ``prior_input_size``: ``log2`` of the input area H·W in pixels (the entry's preprocessing).
* ``prior_source_acc``: the source accuracy in % (``source_accuracy``, else the first percentage in
  ``reported_accuracy``), NaN when the zoo gives neither. Accuracies on different source tasks are not
  comparable; it is reported as given.

The logarithms only matter where priors are averaged with other standardised scores (``auto``): a rank
statistic (τ_w, rel@1) is the same on the raw values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transfersel.zoo import ModelEntry, load_zoo

if TYPE_CHECKING:
    from transfersel.features import ModelFeatures

__all__ = [
    "PRIORS",
    "count_parameters",
    "prior_feature_dim",
    "prior_input_size",
    "prior_params",
    "prior_source_acc",
    "priors",
    "priors_for_features",
    "priors_for_zoo",
]

PRIORS = ("prior_params", "prior_feature_dim", "prior_input_size", "prior_source_acc")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_BN_STAT = re.compile(r"(^|\.)(running_mean|running_var|num_batches_tracked)$")


def count_parameters(module: Any) -> int:
    """Number of weights of a ``torch.nn.Module``: its parameters, else its buffers but BatchNorm statistics.

    TorchScript graphs converted from TFLite/Keras hold their weights as (quantised) buffers and have no
    parameters; their buffers (weights, scales, zero points, biases) are then the closest measure of size.
    """
    n = sum(int(p.numel()) for p in module.parameters())
    if n == 0:
        n = sum(int(b.numel()) for name, b in module.named_buffers() if not _BN_STAT.search(name))
    return n


def prior_params(entry: ModelEntry, *, load: bool = True) -> float:
    """``log10(params)``: the zoo's ``params``, else counted from the loaded model (NaN if ``load=False``)."""
    n = entry.spec.get("params")
    if not isinstance(n, int | float) or isinstance(n, bool) or n <= 0:
        if not load:
            return math.nan
        n = count_parameters(entry.load().module)
    return math.log10(n) if n > 0 else math.nan


def prior_feature_dim(entry: ModelEntry, *, dim: int | None = None) -> float:
    """``log2(D)``: the zoo's ``feature_dim``, else ``dim`` (e.g. the cached features' D), else NaN."""
    d = entry.spec.get("feature_dim", dim)
    return math.log2(d) if isinstance(d, int | float) and d > 0 else math.nan


def prior_input_size(entry: ModelEntry) -> float:
    """``log2(H·W)`` of the model's input size after preprocessing."""
    h, w = entry.preprocess().size
    return math.log2(h * w)


def prior_source_acc(entry: ModelEntry) -> float:
    """Source accuracy in %: ``source_accuracy`` (number, or text with a %), else the first % in
    ``reported_accuracy``; NaN when neither is known. A number ≤ 1 is read as a fraction."""
    for key in ("source_accuracy", "reported_accuracy"):
        v = entry.spec.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v) * 100 if v <= 1 else float(v)
        if isinstance(v, str) and (m := _PERCENT.search(v)):
            return float(m.group(1))
    return math.nan


def priors(entry: ModelEntry, *, load: bool = True, dim: int | None = None) -> dict[str, float]:
    """Every prior of one zoo entry, ``{name: value}`` in :data:`PRIORS` order (see the module docs)."""
    return {
        "prior_params": prior_params(entry, load=load),
        "prior_feature_dim": prior_feature_dim(entry, dim=dim),
        "prior_input_size": prior_input_size(entry),
        "prior_source_acc": prior_source_acc(entry),
    }


def priors_for_zoo(entries: Sequence[ModelEntry], *, load: bool = True) -> dict[str, dict[str, float]]:
    """``{model: {prior: value}}`` for a whole zoo, in zoo order."""
    return {e.name: priors(e, load=load) for e in entries}


def priors_for_features(
    feats: Sequence[ModelFeatures], zoo: str | Path | None, *, only: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """``{model: {prior: value}}`` for the models of ``feats`` from the zoo's cards, without loading a model
    (``prior_params`` is NaN where the zoo gives no ``params``); without a zoo only ``prior_feature_dim``."""
    widths = {f.model: int(f.features.shape[-1]) for f in feats}
    if zoo is None:
        return {m: {"prior_feature_dim": math.log2(d) if d > 0 else math.nan} for m, d in widths.items()}
    entries = load_zoo(zoo, only=list(only) if only else None)
    return {e.name: priors(e, load=False, dim=widths[e.name]) for e in entries if e.name in widths}
