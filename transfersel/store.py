"""The crash-safe feature cache.

Layout (one folder per dataset fingerprint + split, one subfolder per model id)::

    <root>/<dataset>.<split>-<fingerprint[:12]>/<model>-<model fingerprint[:12]>/
        features.npy   float32 (N, D)       penultimate features, dataset order (corrupt images skipped)
        logits.npy     float16 (N, K)       source-classifier logits (absent when the model has no head)
        labels.npy     int64 (N,)
        meta.json      written last: spec, weights hash, preprocessing, versions, N, D, seconds, device
    <root>/.tmp/<host>-<pid>-<random>/      entries being written; renamed into place only when complete

An entry counts only once its folder holds ``meta.json``; a killed run leaves at most a ``.tmp`` folder,
which the next run removes when its process is gone. Reads are memory-mapped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.data import Dataset
from transfersel.errors import InputError
from transfersel.paths import default_cache_root
from transfersel.zoo import ModelEntry

__all__ = ["CachedFeatures", "EntryWriter", "FeatureStore"]


@dataclass
class CachedFeatures:
    """One cache entry, memory-mapped: features (N, D) float32, logits (N, K) float16 or None, labels (N,)."""

    model: str
    path: Path
    features: np.ndarray
    logits: np.ndarray | None
    labels: np.ndarray
    classes: list[str]
    meta: dict

    @classmethod
    def open(cls, path: Path) -> CachedFeatures:
        meta = json.loads((path / "meta.json").read_text())
        logits = path / "logits.npy"
        return cls(
            meta["model"],
            path,
            np.load(path / "features.npy", mmap_mode="r"),
            np.load(logits, mmap_mode="r") if logits.exists() else None,
            np.load(path / "labels.npy", mmap_mode="r"),
            list(meta["classes"]),
            meta,
        )

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


class FeatureStore:
    """Feature cache rooted at ``root`` (default: :func:`default_cache_root`)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    # --- addressing -----------------------------------------------------------------------------
    def dataset_dir(self, dataset: Dataset) -> Path:
        return self.root / f"{dataset.name}.{dataset.split or 'all'}-{dataset.fingerprint[:12]}"

    def entry_dir(self, dataset: Dataset, entry: ModelEntry) -> Path:
        return self.dataset_dir(dataset) / f"{entry.name}-{entry.fingerprint()[:12]}"

    # --- reading --------------------------------------------------------------------------------
    def get(self, dataset: Dataset, entry: ModelEntry) -> CachedFeatures | None:
        """The complete entry for this dataset and model, or None (never a partial one)."""
        path = self.entry_dir(dataset, entry)
        if not (path / "meta.json").is_file():
            return None
        try:
            return CachedFeatures.open(path)
        except (OSError, ValueError, KeyError):  # damaged by hand: treat as missing, it will be rewritten
            return None

    def entries(self) -> list[CachedFeatures]:
        """Every complete entry, sorted by dataset folder then model."""
        if not self.root.is_dir():
            return []
        out = []
        for meta in sorted(self.root.glob("*/*/meta.json")):
            if meta.parent.parent.name.startswith("."):
                continue
            try:
                out.append(CachedFeatures.open(meta.parent))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def remove(
        self,
        target: CachedFeatures | Path | None = None,
        *,
        model: str | None = None,
        dataset: str | None = None,
    ) -> list[Path]:
        """Delete one entry, or every entry matching ``model`` and/or ``dataset`` name; return the folders."""
        if target is not None:
            paths = [target.path if isinstance(target, CachedFeatures) else Path(target)]
        elif model is None and dataset is None:
            raise InputError("say what to remove: an entry, a model name and/or a dataset name")
        else:
            paths = [
                e.path
                for e in self.entries()
                if (model is None or e.model == model) and (dataset is None or e.meta["dataset"] == dataset)
            ]
        for p in paths:
            if not (p / "meta.json").is_file() or self.root.resolve() not in p.resolve().parents:
                raise InputError(f"{p} is not an entry of the cache at {self.root}")
            trash = self._tmp_dir()
            p.rename(trash)  # atomic: the entry disappears at once, then the files go
            shutil.rmtree(trash, ignore_errors=True)
            if p.parent.is_dir() and not any(p.parent.iterdir()):
                p.parent.rmdir()
        return paths

    # --- writing --------------------------------------------------------------------------------
    def writer(self, dataset: Dataset, entry: ModelEntry) -> EntryWriter:
        return EntryWriter(self._tmp_dir(), self.entry_dir(dataset, entry), len(dataset))

    def _tmp_dir(self) -> Path:
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def clean_stale(self) -> list[Path]:
        """Remove temporary folders of runs on this host whose process no longer exists."""
        tmp, removed = self.root / ".tmp", []
        host = socket.gethostname()
        for d in tmp.glob(f"{host}-*") if tmp.is_dir() else []:
            try:
                pid = int(d.name[len(host) + 1 :].split("-")[0])
            except ValueError:
                continue
            if not _alive(pid):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EntryWriter:
    """Writes one entry batch by batch into ``.npy`` memmaps in a temporary folder; :meth:`commit` publishes.

    Arrays are created at the first batch (when D and K are known) with room for every sample; rows of
    skipped (corrupt) images are dropped at commit.
    """

    def __init__(self, tmp: Path, final: Path, n: int) -> None:
        self.tmp, self.final, self.n = tmp, final, n
        self.features: np.ndarray | None = None
        self.logits: np.ndarray | None = None
        tmp.mkdir(parents=True)

    def write(self, rows: np.ndarray, features: np.ndarray, logits: np.ndarray | None) -> None:
        """Store a batch: ``rows`` are the dataset indices of the batch's samples."""
        if self.features is None:
            self.features = _memmap(self.tmp / "features.npy", np.float32, (self.n, features.shape[1]))
            if logits is not None:
                self.logits = _memmap(self.tmp / "logits.npy", np.float16, (self.n, logits.shape[1]))
        self.features[rows] = features
        if self.logits is not None and logits is not None:
            self.logits[rows] = logits

    def commit(self, keep: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> CachedFeatures:
        """Keep the rows ``keep`` (sorted dataset indices), write labels then meta.json, rename into place."""
        if self.features is None:
            raise InputError("no image of the dataset could be read; nothing to store")
        for name in ("features", "logits"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if len(keep) != self.n:  # corrupt images were skipped: compact the rows
                out = _memmap(self.tmp / f"{name}.part.npy", arr.dtype, (len(keep), arr.shape[1]))
                for start in range(0, len(keep), 4096):
                    out[start : start + 4096] = arr[keep[start : start + 4096]]
                out.flush()
                del out
                setattr(self, name, None)
                del arr
                os.replace(self.tmp / f"{name}.part.npy", self.tmp / f"{name}.npy")
            else:
                arr.flush()
        meta = {**meta, "n": int(len(keep)), "d": int(self._shape("features")[1])}
        np.save(self.tmp / "labels.npy", np.ascontiguousarray(labels, dtype=np.int64))
        self.features = self.logits = None
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        self.final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if self.final.exists():  # --force: move the old entry away, then publish the new one
            old = self.tmp.with_name(self.tmp.name + "-old")
            self.final.rename(old)
        self.tmp.rename(self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return CachedFeatures.open(self.final)

    def _shape(self, name: str) -> tuple[int, ...]:
        return np.load(self.tmp / f"{name}.npy", mmap_mode="r").shape

    def abort(self) -> None:
        self.features = self.logits = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _memmap(path: Path, dtype: Any, shape: tuple[int, int]) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
