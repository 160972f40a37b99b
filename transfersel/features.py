"""Getting features for a zoo × dataset: from the feature cache (extracting what is missing) or from a folder
of precomputed ``{model}_{dataset}_feature.npy`` / ``_label.npy`` files (the paper repos' layout; optional
``_logits.npy``, or ``_output.npy`` as the SFDA repo names the source logits).

Used by :mod:`transfersel.rank` (rank, evaluate, ensemble) and the ``score`` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transfersel.agreement import GroundTruth
from transfersel.errors import InputError

if TYPE_CHECKING:
    from transfersel.executor import Executor

__all__ = ["ModelFeatures", "extract_features", "get_features", "load_array", "load_feature_dir"]

PathLike = str | Path


@dataclass(frozen=True)
class ModelFeatures:
    """One model's features on one dataset: (N, D) features, (N,) labels, optional (N, K) source logits."""

    model: str
    features: Any
    labels: Any
    logits: Any = None


def load_array(path: Path, what: str) -> Any:
    """Memory-map a ``.npy`` file, or raise a one-line error saying what is wrong."""
    if path.is_dir():
        raise InputError(f"{what} path {path} is a directory; pass one .npy file (saved with numpy.save)")
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist; pass a .npy file")
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        kind = "it is empty" if not head else "no .npy header"
        raise InputError(
            f"{what} file {path} is not a NumPy .npy file ({kind}); save the array with numpy.save "
            "(a CSV or text file: numpy.loadtxt, then numpy.save)"
        )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if "mmap length" in str(exc):
            raise InputError(
                f"{what} file {path} is truncated (shorter than its .npy header says); save it "
                "again with numpy.save"
            ) from None
        raise InputError(
            f"{what} file {path} is not a readable .npy array ({' '.join(str(exc).split())}); save it with "
            "numpy.save (numeric data, not objects)"
        ) from None


_NPY_MAGIC = b"\x93NUMPY"


def load_feature_dir(
    directory: PathLike, dataset: str, *, models: Sequence[str] | None = None
) -> list[ModelFeatures]:
    """Precomputed features ``{model}_{dataset}_feature.npy`` + ``_label.npy`` (+ ``_logits``/``_output``).

    ``models`` fixes which models and in what order (default: every model with a feature file, sorted).
    Arrays are memory-mapped, never loaded whole.
    """
    directory = Path(directory)
    if directory.is_file():
        raise InputError(
            f"feature directory {directory} is a file; pass the folder of {{model}}_{dataset}_feature.npy"
            " and _label.npy files (one features file: transfersel score FEATURES.npy LABELS.npy)"
        )
    if not directory.is_dir():
        raise InputError(f"feature directory {directory} does not exist; pass a folder of .npy files")
    suffix = f"_{dataset}_feature.npy"
    found = sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    if models is None:
        models = found
    missing = [m for m in models if m not in found]
    if missing or not models:
        raise InputError(
            f"{directory} has no {{model}}{suffix} for {', '.join(missing) or 'any model'}; "
            f"it has features of: {', '.join(found) or 'none'} for dataset {dataset!r}"
        )
    out = []
    for m in models:
        stem = directory / f"{m}_{dataset}"
        logits_path = next(
            (p for p in (Path(f"{stem}_logits.npy"), Path(f"{stem}_output.npy")) if p.is_file()), None
        )
        out.append(
            ModelFeatures(
                m,
                load_array(Path(f"{stem}_feature.npy"), "features"),
                load_array(Path(f"{stem}_label.npy"), "labels"),
                load_array(logits_path, "logits") if logits_path else None,
            )
        )
    return out


def extract_features(
    zoo_path: PathLike,
    data: PathLike,
    *,
    only: Sequence[str] | None,
    split: str,
    max_per_class: int | None,
    seed: int,
    cache: PathLike | None,
    device: str,
    notes: list[str],
    ground_truth: GroundTruth | None = None,
    executor: Executor | None = None,
) -> tuple[str, list[ModelFeatures]]:
    """Features of every zoo model on ``data`` from the cache, extracting the missing ones.

    Models whose extraction failed are left out with a note. A ``ground_truth`` that lacks the dataset or one
    of the models is refused before anything is extracted. ``executor``: where the missing extractions run
    (None or ``local``: here; ``ray``: one Ray task per model, :func:`transfersel.distributed.extract_on`).
    """
    from transfersel.data import open_dataset
    from transfersel.distributed import extract_on
    from transfersel.store import FeatureStore
    from transfersel.zoo import load_zoo

    zoo = load_zoo(zoo_path, only=list(only) if only else None)
    dataset = open_dataset(data, split=split, max_per_class=max_per_class, seed=seed)
    if ground_truth is not None:
        ground_truth.check_covers(dataset.name, [e.name for e in zoo])
    report = extract_on(executor, zoo, dataset, store=FeatureStore(cache), device=device)
    for name, why in report.failures.items():
        notes.append(f"{name}: extraction failed ({why}); left out")
    out = [
        ModelFeatures(e.name, cf.features, cf.labels, cf.logits)
        for e in zoo
        if (cf := report.features.get(e.name)) is not None
    ]
    if not out:
        raise InputError(f"no model of {zoo_path} could be extracted on {data}; see the notes above")
    return dataset.name, out


def get_features(
    data: PathLike,
    *,
    models: PathLike | None,
    features: PathLike | None,
    ground_truth: GroundTruth | None,
    notes: list[str],
    **extract_options: Any,
) -> tuple[str, list[ModelFeatures]]:
    """(dataset name, per-model features) from a precomputed directory or from the zoo + cache."""
    if features is not None:
        dataset = str(data)
        if models is not None:
            from transfersel.zoo import load_zoo

            order = [e.name for e in load_zoo(models, only=extract_options.get("only"))]
            if ground_truth is not None:
                ground_truth.check_covers(dataset, order)
            return dataset, load_feature_dir(features, dataset, models=order)
        feats = load_feature_dir(features, dataset)
        if (
            ground_truth is not None and dataset in ground_truth.accuracy
        ):  # the ground truth's order as zoo order
            listed = list(ground_truth.accuracy[dataset])
            feats.sort(key=lambda f: listed.index(f.model) if f.model in listed else len(listed))
        return dataset, feats
    if models is None:
        raise InputError(
            "pass --models ZOO.yaml (with --data PATH), or --features DIR of precomputed .npy files"
        )
    return extract_features(models, data, notes=notes, ground_truth=ground_truth, **extract_options)
