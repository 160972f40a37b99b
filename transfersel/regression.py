"""Regression targets for fine-tuning ground truth: per-sample numbers for train and test, and R².

A regression task is an image dataset (its class folders only organise the files and stratify the validation
split) plus R real-valued targets per image, read from a CSV per split (``path,<col>,...``; ``path`` relative
to the split folder, as :meth:`~transfersel.data.Dataset.relpaths` gives it). Fine-tuning
(:func:`transfersel.finetune.finetune` with ``targets=``) trains a linear head on the targets standardised
with the fitted rows' mean and sd, by mean squared error, and scores the mean over targets of the test R².
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transfersel.data import Dataset
from transfersel.errors import InputError
from transfersel.metrics._regression import r2_per_target
from transfersel.targets import read_columns

__all__ = ["RegressionTargets", "r2_per_target"]


@dataclass(frozen=True)
class RegressionTargets:
    """Raw (not standardised) targets: ``train`` (N_train, R) and ``test`` (N_test, R) float64, in the
    datasets' sample order, named by ``names`` (R)."""

    train: np.ndarray
    test: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        for split, T in (("train", self.train), ("test", self.test)):
            if T.ndim != 2 or T.shape[1] != len(self.names) or not np.isfinite(T).all():
                raise InputError(
                    f"{split} regression targets must be finite (N, {len(self.names)}), got {T.shape}"
                )
        if (self.train.std(axis=0) == 0).any():
            raise InputError("a regression target is constant on train; drop that column")

    @classmethod
    def from_csv(
        cls,
        train: Dataset,
        test: Dataset,
        train_csv: str | os.PathLike[str],
        test_csv: str | os.PathLike[str],
        columns: Sequence[str],
        *,
        key_column: str = "path",
    ) -> RegressionTargets:
        """``columns`` of each split's CSV, rows matched to the split's files by ``key_column``."""
        if not columns:
            raise InputError("name at least one target column (--target-column)")
        arrays = []
        for ds, path in ((train, train_csv), (test, test_csv)):
            cells = read_columns(path, list(columns), key_column=key_column, keys=ds.relpaths())
            try:
                arrays.append(np.array(cells, dtype=np.float64))
            except ValueError:
                raise InputError(f"{path}: columns {', '.join(columns)} must hold numbers") from None
        return cls(arrays[0], arrays[1], tuple(columns))

    @property
    def fingerprint(self) -> str:
        """A hash of the names and values (part of every run-log key: other targets are other runs)."""
        h = hashlib.sha256("\x1f".join(self.names).encode())
        for T in (self.train, self.test):
            h.update(np.ascontiguousarray(T, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]
