"""The fine-tuning protocol and its run log: what one run does, and the record of finished runs.

Every (dataset, model, mode, stage, config) result is appended to a JSON-lines run log as soon as it
finishes (one ``write`` + ``fsync`` per line, so a line is complete or absent), and a rerun skips what the
log already holds. The key is :meth:`RunLog.key` of the dataset, the model and :meth:`Protocol.run_config`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transfersel.data import Dataset
from transfersel.errors import InputError
from transfersel.zoo import ModelEntry

__all__ = ["MODES", "Protocol", "RunLog", "Runner", "protocol_summary"]

MODES = ("full", "linear")


@dataclass(frozen=True)
class Protocol:
    """What one fine-tuning run does. ``lrs``/``wds`` span the grid of ``full``; ``Cs`` that of ``linear``
    (inverse L2 strength, as in scikit-learn). ``wds`` are absolute SGD weight decays. ``seeds``: the final
    retrain is repeated once per seed and the test accuracies averaged."""

    mode: str = "full"
    lrs: tuple[float, ...] = (1e-2, 1e-3)
    wds: tuple[float, ...] = (0.0,)
    steps: int = 300
    final_steps: int | None = None  # None: same as steps
    batch_size: int = 32
    augment: bool = True
    val_fraction: float = 0.2
    seeds: tuple[int, ...] = (0,)
    # Without clipping, BN-free graphs (folded TFLite MobileNets, traced ResNets whose BatchNorm is baked in
    # eval mode) collapse to constant predictions at chance at lr >= 1e-3; 5 leaves stable models' runs alone.
    grad_clip: float | None = 5.0
    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise InputError(f"learning rates must be positive numbers, got {list(self.lrs)}")
        if not self.wds or any(not (wd >= 0 and math.isfinite(wd)) for wd in self.wds):
            raise InputError(f"weight decays must be numbers >= 0, got {list(self.wds)}")
        if not self.Cs or any(not (c > 0 and math.isfinite(c)) for c in self.Cs):
            raise InputError(f"linear-probe C values must be positive numbers, got {list(self.Cs)}")
        if self.steps < 1 or (self.final_steps is not None and self.final_steps < 1):
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise InputError(f"--grad-clip must be a positive number (0: no clipping), got {self.grad_clip}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if not self.seeds:
            raise InputError("at least one seed is needed for the final retrain")

    def grid(self) -> list[dict[str, float]]:
        if self.mode == "linear":
            return [{"C": c} for c in sorted(self.Cs)]
        return [{"lr": lr, "wd": wd} for lr in sorted(self.lrs) for wd in sorted(self.wds)]

    def run_config(self, hyper: dict[str, float], *, stage: str, seed: int) -> dict[str, Any]:
        """Everything that determines one run's result (the run log's key, with dataset and model)."""
        cfg: dict[str, Any] = {"mode": self.mode, "stage": stage, **hyper, "seed": seed}
        if self.mode == "full":
            cfg["steps"] = self.steps if stage == "val" else (self.final_steps or self.steps)
            cfg["batch_size"] = self.batch_size
            cfg["augment"] = self.augment
            cfg["grad_clip"] = self.grad_clip
        if stage == "val":
            cfg["val_fraction"] = self.val_fraction
        return cfg


class RunLog:
    """Append-only JSON-lines record of finished runs; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.records[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(dataset: Dataset, entry: ModelEntry, config: dict[str, Any]) -> str:
        return json.dumps(
            {"dataset": dataset.fingerprint, "model": entry.fingerprint(), **config}, sort_keys=True
        )

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, key: str, record: dict[str, Any]) -> None:
        rec = {"key": key, **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(rec, sort_keys=True) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[key] = rec


Runner = Callable[[dict[str, float], str, int], tuple[float, str, dict[str, Any]]]
"""One run: ``(hyper, stage, seed) -> (accuracy %, measure name, extra log fields)``."""


def protocol_summary(protocol: Protocol) -> str:
    """One line per setting of the protocol's mode, for the CSV header and the benchmark's RESULTS."""
    linear_only = {"Cs"}
    full_only = {"lrs", "wds", "steps", "final_steps", "batch_size", "augment", "grad_clip"}
    skip = full_only if protocol.mode == "linear" else linear_only
    return "\n".join(f"{k}: {v}" for k, v in asdict(protocol).items() if k not in skip)
