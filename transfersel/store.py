"""The crash-safe feature cache.

Layout (one folder per dataset fingerprint + split, one subfolder per model id)::

    <root>/<dataset>.<split>-<fingerprint[:12]>/<model>-<model fingerprint[:12]>/
        features.npy   float32 (N, D)       penultimate features, dataset order (corrupt images skipped)
        logits.npy     float32 (N, K)       source-classifier logits (absent when the model has no head;
                                            float16 in entries written before checksums were recorded)
        labels.npy     int64 (N,)
        meta.json      written last: spec, weights hash, preprocessing, versions, N, D, seconds, device,
                       and ``checksums``: per array file its shape, dtype and sampled digest

    <root>/.tmp/<host>-<pid>-<random>/      entries being written; renamed into place only when complete

An entry counts only once its folder holds ``meta.json``; a killed run leaves at most a ``.tmp`` folder,
which the next run removes when its process is gone. Reads are memory-mapped.

Every read is checked (:mod:`transfersel.cache_check`): meta.json's shape, the arrays' presence, shapes and
dtypes, their checksums, and (when the dataset is known) the labels. A damaged entry is never returned as
features: :meth:`FeatureStore.lookup` names the damage so that extraction recomputes the entry, and
:meth:`FeatureStore.entries` lists it with ``damaged`` set. Entries written before checksums were recorded
are read unverified (structure and labels are still checked).
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

from transfersel.cache_check import (
    ARRAYS,
    CHECKSUM_SCHEME,
    CacheDamage,
    array_digest,
    check_arrays,
    check_meta,
    expected_labels,
)
from transfersel.data import Dataset
from transfersel.errors import InputError
from transfersel.paths import default_cache_root
from transfersel.zoo import ModelEntry

__all__ = ["CachedFeatures", "EntryWriter", "FeatureStore"]


@dataclass
class CachedFeatures:
    """One cache entry, memory-mapped: features (N, D) float32, logits (N, K) float32 (float16 in old entries)
    or None, labels (N,) int64. ``damaged`` is None for a sound entry, else why it cannot be used (its arrays
    are then empty and ``meta`` holds what the folder names tell: model, dataset, split)."""

    model: str
    path: Path
    features: np.ndarray
    logits: np.ndarray | None
    labels: np.ndarray
    classes: list[str]
    meta: dict
    damaged: str | None = None

    @classmethod
    def open(cls, path: Path, *, verify: bool = True) -> CachedFeatures:
        """Read and check an entry (checksums too when ``verify``); raise :class:`CacheDamage` if damaged."""
        try:
            raw = json.loads((path / "meta.json").read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise CacheDamage(f"meta.json is unreadable ({type(exc).__name__})") from None
        except ValueError:
            raise CacheDamage("meta.json is not valid JSON") from None
        meta = check_meta(raw)
        arrays = check_arrays(path, meta, verify=verify)
        return cls(
            meta["model"],
            path,
            arrays["features"],
            arrays["logits"],
            arrays["labels"],
            list(meta["classes"]),
            meta,
        )

    @classmethod
    def damaged_entry(cls, path: Path, why: str) -> CachedFeatures:
        """A placeholder for a damaged entry, named from its folders, so that it can be listed and removed."""
        dataset, _, split = path.parent.name.rpartition("-")[0].rpartition(".")
        model = path.name.rpartition("-")[0] or path.name
        meta = {"model": model, "dataset": dataset, "split": split, "n": "?", "d": "?", "damaged": why}
        meta["created"] = f"DAMAGED: {why}"  # shown by `cache ls`, whose last column is `created`
        empty = np.empty((0, 0), np.float32)
        return cls(model, path, empty, None, np.empty(0, np.int64), [], meta, why)

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


class FeatureStore:
    """Feature cache rooted at ``root`` (default: :func:`default_cache_root`)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(
                f"cache folder {self.root} is a file; pass --cache-dir a folder (it is created if missing)"
            )

    # --- addressing -----------------------------------------------------------------------------
    def dataset_dir(self, dataset: Dataset) -> Path:
        return self.root / f"{dataset.name}.{dataset.split or 'all'}-{dataset.fingerprint[:12]}"

    def entry_dir(self, dataset: Dataset, entry: ModelEntry) -> Path:
        return self.dataset_dir(dataset) / f"{entry.name}-{entry.fingerprint()[:12]}"

    # --- reading --------------------------------------------------------------------------------
    def get(self, dataset: Dataset, entry: ModelEntry) -> CachedFeatures | None:
        """The complete, sound entry for this dataset and model, or None (never a partial or damaged one)."""
        return self.lookup(dataset, entry)[0]

    def lookup(self, dataset: Dataset, entry: ModelEntry) -> tuple[CachedFeatures | None, str | None]:
        """``(entry, None)`` if cached and sound, ``(None, None)`` if absent, ``(None, why)`` if damaged.

        Sound means: meta.json well formed, arrays present with the recorded shapes and checksums, and the
        labels equal to ``dataset``'s (less the images the entry skipped).
        """
        path = self.entry_dir(dataset, entry)
        if not (path / "meta.json").exists():
            return None, None
        try:
            cf = CachedFeatures.open(path)
            if cf.classes != dataset.classes:
                raise CacheDamage("its classes differ from the dataset's")
            want = expected_labels(cf.meta, dataset.labels, dataset.relpaths)
            if not np.array_equal(cf.labels, want):
                raise CacheDamage(
                    f"its {len(cf.labels)} labels differ from the dataset's {len(want)} "
                    "(permuted or overwritten)"
                )
        except CacheDamage as exc:
            return None, str(exc)
        return cf, None

    def entries(self, *, verify: bool = True) -> list[CachedFeatures]:
        """Every complete entry, sorted by dataset folder then model; damaged ones have ``damaged`` set.

        ``verify`` checks the arrays' checksums (a few per cent of reading them), else only their shapes.
        """
        if not self.root.is_dir():
            return []
        out = []
        for meta in sorted(self.root.glob("*/*/meta.json")):
            if meta.parent.parent.name.startswith("."):
                continue
            try:
                out.append(CachedFeatures.open(meta.parent, verify=verify))
            except CacheDamage as exc:
                out.append(CachedFeatures.damaged_entry(meta.parent, str(exc)))
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
            if not (p / "meta.json").exists() or self.root.resolve() not in p.resolve().parents:
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
                self.logits = _memmap(self.tmp / "logits.npy", np.float32, (self.n, logits.shape[1]))
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
        np.save(self.tmp / "labels.npy", np.ascontiguousarray(labels, dtype=np.int64))
        self.features = self.logits = None
        sums = {}
        for name in ARRAYS:
            if (self.tmp / f"{name}.npy").is_file():
                f = self.tmp / f"{name}.npy"
                sums[f"{name}.npy"] = array_digest(np.load(f, mmap_mode="r"), f)
        meta = {
            **meta,
            "n": int(len(keep)),
            "d": int(self._shape("features")[1]),
            "checksums": sums,
            "checksum_scheme": CHECKSUM_SCHEME,
        }
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
