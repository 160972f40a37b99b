"""Targets for label-embedding metrics: class names, per-sample texts and numbers (EMMS, spec §2.2).

EMMS scores features against "noisy label embeddings" of any label format:

* **class names** (classification): one text per class, from the ImageFolder folder names (sorted, the
  class-index order) or a ``--classes`` file, optionally put in a prompt (``"a photo of a {}."``), embedded by
  K embedders → ``(K, C, D2)``, the ``label_embeddings`` input of the metrics;
* **per-sample texts** (captions, answers): one CSV cell per sample → ``(K, N, D2)``;
* **numbers** (regression): CSV columns used directly, standardised per column → ``(N, R)``; as an EMMS
  target tensor they are one channel, ``(1, N, R)``.

:func:`logme_flabel` is the "LogME + F-label" baseline of the EMMS paper: LogME (spec §2.3) with the label
embeddings as real-valued regression targets, one evidence per embedding column, averaged.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from transfersel.embedders import Embedder, embed_texts, stack_channels
from transfersel.errors import InputError, TransferabilityWarning, TransferselError
from transfersel.metrics import linalg as la
from transfersel.paths import read_text

__all__ = [
    "DEFAULT_TEMPLATE",
    "LabelTargets",
    "class_names",
    "label_embeddings_for",
    "logme_flabel",
    "per_sample_metric",
    "prompts",
    "read_columns",
    "read_numeric_targets",
    "read_text_targets",
    "standardise",
    "text_embeddings_for",
]

DEFAULT_TEMPLATE = "a photo of a {}."
PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------------------------------------
# Class names


def class_names(source: Any, *, classes_file: PathLike | None = None, humanise: bool = True) -> list[str]:
    """Class names in class-index order.

    Args:
        source: a dataset with ``.classes`` (folder names, sorted), or an ImageFolder path: a split folder of
            class folders, or a dataset root holding ``train/``. Ignored when ``classes_file`` is given.
        classes_file: a text file, one class name per line in class-index order (blank lines skipped).
        humanise: folder names ``apple_pie`` → ``apple pie`` (files are used verbatim).
    """
    if classes_file is not None:
        lines = read_text(classes_file, "classes", "a text file with one class name per line").splitlines()
        names = [line.strip() for line in lines if line.strip()]
        if len(names) < 2:
            raise InputError(f"{classes_file} lists {len(names)} class name(s); write one name per line")
        return names
    if hasattr(source, "classes"):
        folders = [str(c) for c in source.classes]
    else:
        root = Path(source)
        if (root / "train").is_dir():
            root = root / "train"
        if not root.is_dir():
            raise InputError(f"{source} is not an ImageFolder directory; pass --classes NAMES.txt instead")
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise InputError(f"{source} has {len(folders)} class folder(s); pass --classes NAMES.txt instead")
    return [f.replace("_", " ") for f in folders] if humanise else folders


def prompts(names: Sequence[str], template: str | None = DEFAULT_TEMPLATE) -> list[str]:
    """``template.format(name)`` for every name (``None`` or ``"{}"``: the bare names)."""
    if template is None:
        return list(names)
    if template.count("{}") != 1:
        raise InputError(
            f"prompt template {template!r} must contain '{{}}' exactly once, e.g. 'a photo of a {{}}.'"
        )
    return [template.replace("{}", n) for n in names]


# ----------------------------------------------------------------------------------------------------------
# Per-sample targets from a CSV


def read_columns(
    path: PathLike, columns: Sequence[str], *, key_column: str | None, keys: Sequence[str] | None
) -> list[list[str]]:
    """Cells of ``columns`` per row: in file order, or ordered by ``keys`` via ``key_column``."""
    text = read_text(path, "targets", "a CSV with a header row and one row per sample")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in [*columns, *([key_column] if key_column else [])] if c not in header]
    if missing:
        raise InputError(f"{path} has no column {', '.join(missing)}; its columns: {', '.join(header)}")
    rows = list(reader)
    if not rows:
        raise InputError(f"{path} has no data rows")
    if key_column is not None and keys is not None:
        by_key = {r[key_column]: r for r in rows}
        absent = [k for k in keys if k not in by_key]
        if absent:
            raise InputError(f"{path}: {len(absent)} sample(s) have no row, e.g. {key_column}={absent[0]!r}")
        rows = [by_key[k] for k in keys]
    return [[r[c] for c in columns] for r in rows]


def read_text_targets(
    path: PathLike, column: str, *, key_column: str | None = None, keys: Sequence[str] | None = None
) -> list[str]:
    """One text per sample (a caption, an answer) from ``column`` of a CSV.

    Rows are in sample order, or matched to ``keys`` (e.g. relative file paths) by ``key_column``.
    """
    texts = [row[0] for row in read_columns(path, [column], key_column=key_column, keys=keys)]
    empty = sum(not t.strip() for t in texts)
    if empty:
        raise InputError(f"{path}: {empty} empty cell(s) in column {column!r}; every sample needs a text")
    return texts


def standardise(T: np.ndarray) -> np.ndarray:
    """Columns of (N, R) ``T`` to zero mean and unit variance (ddof 0), in float64."""
    T = np.asarray(T, dtype=np.float64)
    std = T.std(axis=0)
    if (std == 0).any():
        raise InputError(f"target column(s) {np.flatnonzero(std == 0).tolist()} are constant; drop them")
    return (T - T.mean(axis=0)) / std


def read_numeric_targets(
    path: PathLike,
    columns: Sequence[str],
    *,
    key_column: str | None = None,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """(N, R) float64 regression targets from ``columns`` of a CSV, standardised per column."""
    cells = read_columns(path, columns, key_column=key_column, keys=keys)
    try:
        T = np.array(cells, dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: columns {', '.join(columns)} must hold numbers for --regression") from None
    if not np.isfinite(T).all():
        raise InputError(f"{path}: NaN or inf in the regression targets; drop or impute those samples")
    return standardise(T)


# ----------------------------------------------------------------------------------------------------------
# Embedding targets


def _channels(
    texts: Sequence[str], embedders: Sequence[str | Embedder], *, cache: Any, device: str
) -> np.ndarray:
    if isinstance(embedders, str | Embedder):
        embedders = [embedders]
    return stack_channels([embed_texts(texts, e, cache=cache, device=device) for e in embedders])


def label_embeddings_for(
    dataset: Any,
    embedders: Sequence[str | Embedder],
    *,
    template: str | None = DEFAULT_TEMPLATE,
    classes_file: PathLike | None = None,
    cache: PathLike | bool | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """(K, C, D2) float64 class-name embeddings, one channel per embedder, in class-index order.

    ``dataset``: a dataset with ``.classes`` or an ImageFolder path (see :func:`class_names`). Channels of
    different widths are zero-padded to the widest (exact for EMMS, see :mod:`transfersel.embedders`).
    """
    names = prompts(class_names(dataset, classes_file=classes_file), template)
    return _channels(names, embedders, cache=cache, device=device)


def text_embeddings_for(
    texts: Sequence[str],
    embedders: Sequence[str | Embedder],
    *,
    cache: PathLike | bool | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """(K, N, D2) float64 per-sample embeddings of ``texts`` (repeated texts are embedded once)."""
    return _channels(texts, embedders, cache=cache, device=device)


# ----------------------------------------------------------------------------------------------------------
# LogME + F-label


def logme_flabel(
    features: Any,
    targets: Any,
    *,
    variant: Literal["fixed_point", "icml"] = "fixed_point",
    epsilon: float = 1e-5,
    device: str = "cpu",
) -> float:
    """LogME with real-valued targets: the mean log evidence of the embedding columns (spec §2.3, regression).

    Args:
        features: (N, D) float32/float64, used raw (LogME does not centre).
        targets: (K, N, D2) per-sample label embeddings or (N, R) numbers. All-zero columns (the padding of
            narrower channels) are dropped: they carry no label.

    The evidence needs only the spectrum ``σ`` of ``XᵀX``, ``z² = (Uᵀt)²`` and ``‖t‖² − Σ z²`` per column;
    for N > D ``Uᵀ T = diag(1/s) Vᵀ (Xᵀ T)`` from one Gram and one eigh, for N ≤ D the eigh of ``X Xᵀ``.
    """
    from transfersel.metrics import check_float_matrix as _check_float_matrix
    from transfersel.metrics.logme import SINGULAR_VALUE_FLOOR, log_evidence

    X = _check_float_matrix(features, "features")
    T = np.asarray(targets, dtype=np.float64)
    if T.ndim == 3:
        T = T.transpose(1, 0, 2).reshape(T.shape[1], -1)  # (N, K·D2): every channel's columns
    if T.ndim != 2 or len(T) != len(X) or not np.isfinite(T).all():
        raise InputError(f"targets must be finite (K, N, D2) or (N, R) with N = {len(X)}, got {T.shape}")
    T = T[:, np.abs(T).sum(axis=0) > 0]
    if T.shape[1] == 0:
        raise InputError("every target column is zero; pass real label embeddings or numbers")
    N, D = X.shape
    if N > D:
        w, V = la.eigh(la.gram(X, device=device))
        s = np.sqrt(np.clip(w, 0.0, None))
        keep = s > SINGULAR_VALUE_FLOOR
        XtT = sum(B.T @ T[rows] for rows, B in la.row_blocks(X))
        z = (V[:, keep].T @ XtT) / s[keep, None]
        sigma = w[keep]
    else:
        w, U = la.eigh(la.gram(X.T, device=device))  # (N, N) X Xᵀ
        z, sigma = U.T @ T, np.clip(w, 0.0, None)
    z2 = z**2
    r0 = np.clip((T**2).sum(axis=0) - z2.sum(axis=0), 0.0, None)
    evidence = log_evidence(sigma, z2, r0, N, D, variant=variant, epsilon=epsilon)
    if not np.isfinite(evidence).all():
        warnings.warn(
            f"logme_flabel: perfect fit with epsilon={epsilon} makes a precision infinite; score is nan "
            "(use epsilon > 0)",
            TransferabilityWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(evidence.mean())


# ----------------------------------------------------------------------------------------------------------
# Label targets for `rank`


@dataclass(frozen=True)
class LabelTargets:
    """What ``rank`` feeds the label-embedding metrics, built once per dataset by :meth:`build`.

    Without ``csv``: the class names (``classes_file`` or the dataset's folders) in ``template``, embedded by
    ``embedders`` → ``label_embeddings`` (K, C, D2). With ``csv``: per-sample targets from ``columns`` —
    texts embedded by ``embedders`` (K, N, D2), or, with ``regression``, standardised numbers (1, N, R) —
    which EMMS (:func:`~transfersel.metrics.emms.emms_from_targets`) and LogME (:func:`logme_flabel`) score
    instead of the class labels. Rows are in the features' sample order, or matched by ``key_column``
    against the dataset's relative file paths.
    """

    embedders: tuple[str, ...] = ()
    template: str | None = DEFAULT_TEMPLATE
    classes_file: PathLike | None = None
    csv: PathLike | None = None
    columns: tuple[str, ...] = ()
    key_column: str | None = None
    regression: bool = False
    cache: PathLike | None = None

    def build(
        self, data: Any, *, n_samples: int | None = None, device: str = "cpu", **dataset_options: Any
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(label_embeddings (K, C, D2) or None, per-sample targets (K, N, D2) or None)``.

        ``data`` is the dataset path/name given to ``rank``; ``dataset_options`` (split, max_per_class, seed)
        reopen it for its class names or file paths when they are needed.
        """
        if self.csv is None:
            if not self.embedders:
                raise InputError("label embeddings need an embedder: pass --embedder minilm (repeatable)")
            source = data if self.classes_file is not None else self._dataset(data, **dataset_options)
            E = label_embeddings_for(
                source,
                self.embedders,
                template=self.template,
                classes_file=self.classes_file,
                cache=self.cache,
                device=device,
            )
            return E, None
        if not self.columns:
            raise InputError("--targets needs --target-column NAME (the caption/answer or number column)")
        keys = self._dataset(data, **dataset_options).relpaths() if self.key_column else None
        if self.regression:
            T = read_numeric_targets(self.csv, self.columns, key_column=self.key_column, keys=keys)[None]
        else:
            if not self.embedders or len(self.columns) != 1:
                raise InputError("text targets need one --target-column and at least one --embedder")
            texts = read_text_targets(self.csv, self.columns[0], key_column=self.key_column, keys=keys)
            T = text_embeddings_for(texts, self.embedders, cache=self.cache, device=device)
        if n_samples is not None and T.shape[1] != n_samples:
            raise InputError(
                f"{self.csv} gives {T.shape[1]} targets for {n_samples} samples; one row per sample "
                "(in sample order, or matched by --key-column)"
            )
        return None, T

    @staticmethod
    def _dataset(data: Any, **dataset_options: Any) -> Any:
        from transfersel.data import open_dataset

        if data is None:
            raise InputError("class names and file paths come from a dataset: pass --data (or --classes)")
        try:
            return open_dataset(data, **dataset_options)
        except TransferselError as exc:
            raise InputError(
                f"{exc} (class names and file paths come from the dataset; or pass --classes)"
            ) from None


def per_sample_metric(name: str) -> Callable[..., float] | None:
    """The per-sample-target form of a label metric (EMMS, LogME + F-label, ridge, knn_reg), or None."""
    from transfersel.metrics.emms import emms_from_targets
    from transfersel.metrics.knn_reg import knn_reg_from_targets
    from transfersel.metrics.ridge import ridge_from_targets

    forms = {
        "emms": emms_from_targets,
        "logme": logme_flabel,
        "ridge": ridge_from_targets,
        "knn_reg": knn_reg_from_targets,
    }
    return forms.get(name)


def embeddings_for_labels(E: np.ndarray, labels: Any) -> np.ndarray:
    """``E`` (K, C, D2) restricted to the classes present in ``labels`` (indices into the classes).

    A subsample (``--max-per-class``) or a split may miss classes; the metrics index embeddings by the sorted
    labels present.
    """
    present = np.unique(np.asarray(labels))
    if len(present) == E.shape[1]:
        return E
    if present.dtype.kind not in "iu" or present.min() < 0 or present.max() >= E.shape[1]:
        raise InputError(
            f"labels {present[:5].tolist()}… are not class indices into the {E.shape[1]} embedded class names"
        )
    return E[:, present]
