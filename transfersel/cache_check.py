"""Integrity of feature-cache entries: the array checksums recorded in meta.json and the checks of a read.

A check names what is wrong in one line (:class:`CacheDamage`); the store turns that into "recompute this
entry" (:meth:`transfersel.store.FeatureStore.lookup`) or "list it as damaged"
(:meth:`transfersel.store.FeatureStore.entries`).

The checksum is a *sampled* CRC-32 so that checking costs a few per cent of reading the entry: a
checksum of every byte, even CRC-32 at ~4 GB/s, costs about as much as the read itself (blake2b six times
more). Arrays up to 64 KiB (labels, tiny entries) are summed whole; larger ones by every 128th 8 KiB block
(0.8 % of the bytes) and the last 8 KiB, together with the dtype and shape. A zeroed, overwritten,
permuted, truncated or swapped array is caught, and so is a change to any part of a small array; a change
confined to the unsampled blocks of a large array is not (``scripts/bench_cache.py`` measures the cost).
It guards against accidents (bad disks, copies, hand edits), not against a forger.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.errors import TransferselError

__all__ = [
    "ARRAYS",
    "CHECKSUM_SCHEME",
    "CacheDamage",
    "array_digest",
    "check_arrays",
    "check_meta",
    "expected_labels",
]

CHECKSUM_SCHEME = "crc32 sampled: whole up to 64 KiB, else every 128th 8 KiB block + the last 8 KiB"
_BLOCK = 8 * 1024
_STRIDE = 128
_WHOLE_UP_TO = 64 * 1024

_REQUIRED: dict[str, type] = {"model": str, "dataset": str, "classes": list, "n": int, "d": int}
ARRAYS = ("features", "logits", "labels")


class CacheDamage(TransferselError):
    """A cache entry that cannot be trusted; the message says what is wrong with it."""


def array_digest(arr: np.ndarray, path: Path | None = None) -> str:
    """Sampled CRC-32 (``"crc32:<8 hex>"``) of ``arr``'s dtype, shape and raw bytes (any shape, any dtype).

    ``path``: the ``.npy`` file that ``arr`` is memory-mapped from (``np.load(path, mmap_mode="r")``); the
    sampled blocks are then read with ``pread``, which costs less than faulting the pages in.
    """
    crc = zlib.crc32(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    n = arr.nbytes
    spans = [(0, n)]
    if n > _WHOLE_UP_TO:
        spans = [(s, _BLOCK) for s in range(0, n - _BLOCK + 1, _BLOCK * _STRIDE)] + [(n - _BLOCK, _BLOCK)]
    if path is not None and isinstance(arr, np.memmap) and arr.flags.c_contiguous:
        fd = os.open(path, os.O_RDONLY)
        try:
            for start, size in spans:
                crc = zlib.crc32(os.pread(fd, size, arr.offset + start), crc)
        finally:
            os.close(fd)
    else:  # slices of a memoryview: no copy of a C-ordered array
        view = memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
        for start, size in spans:
            crc = zlib.crc32(view[start : start + size], crc)
    return f"crc32:{crc:08x}"


def check_meta(meta: Any) -> dict[str, Any]:
    """``meta`` (parsed meta.json) if it has the keys and types an entry needs; else raise CacheDamage."""
    if not isinstance(meta, dict):
        raise CacheDamage(f"meta.json holds {type(meta).__name__}, not an object")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CacheDamage(f"meta.json lacks {', '.join(missing)}")
    wrong = [
        k
        for k, t in _REQUIRED.items()
        if not isinstance(meta[k], t) or (t is int and isinstance(meta[k], bool))
    ]
    if wrong or not all(isinstance(c, str) for c in meta["classes"]):
        raise CacheDamage(f"meta.json has values of the wrong type for {', '.join(wrong) or 'classes'}")
    if meta["n"] < 0 or meta["d"] < 1:
        raise CacheDamage(f"meta.json has n={meta['n']}, d={meta['d']}")
    if not isinstance(meta.get("skipped", []), list) or not isinstance(meta.get("checksums", {}), dict):
        raise CacheDamage("meta.json has a malformed skipped or checksums field")
    return meta


def check_arrays(path: Path, meta: dict[str, Any], *, verify: bool = True) -> dict[str, np.ndarray | None]:
    """Memory-map the entry's arrays; check presence, shapes, dtypes, label range, (``verify``) checksums.

    Returns ``{"features": (n, d) float32, "logits": (n, K) float or None, "labels": (n,) int64}``.
    """
    sums = meta.get("checksums")
    arrays: dict[str, np.ndarray | None] = {}
    for name in ARRAYS:
        f = path / f"{name}.npy"
        if not f.is_file():
            if name == "logits" and (sums is None or "logits.npy" not in sums):
                arrays[name] = None  # a model without a classifier head (or an unverified old entry)
                continue
            raise CacheDamage(f"{name}.npy is missing")
        try:
            arrays[name] = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            why = " ".join(str(exc).split())[:80]
            raise CacheDamage(f"{name}.npy is unreadable or truncated ({why})") from None
    n, d = meta["n"], meta["d"]
    feats, logits, labels = arrays["features"], arrays["logits"], arrays["labels"]
    if feats.shape != (n, d) or feats.dtype != np.float32:
        raise CacheDamage(f"features.npy is {feats.dtype} {feats.shape}, meta.json says float32 ({n}, {d})")
    if labels.shape != (n,) or labels.dtype != np.int64:
        raise CacheDamage(f"labels.npy is {labels.dtype} {labels.shape}, meta.json says int64 ({n},)")
    if logits is not None and (logits.ndim != 2 or logits.shape[0] != n or logits.dtype.kind != "f"):
        raise CacheDamage(f"logits.npy is {logits.dtype} {logits.shape}, expected {n} rows of floats")
    if n and (labels.min() < 0 or labels.max() >= len(meta["classes"])):
        raise CacheDamage(f"labels.npy holds codes outside 0..{len(meta['classes']) - 1}")
    if verify and sums is not None:
        for name, arr in arrays.items():
            want = sums.get(f"{name}.npy")
            if arr is None:
                continue
            if not isinstance(want, str):
                raise CacheDamage(f"meta.json records no checksum for {name}.npy")
            if array_digest(arr, path / f"{name}.npy") != want:
                raise CacheDamage(f"{name}.npy does not match its checksum (overwritten or zeroed)")
    return arrays


def expected_labels(
    meta: dict[str, Any], labels: np.ndarray, relpaths: Callable[[], list[str]]
) -> np.ndarray:
    """The dataset's ``labels`` (N,) without the rows meta.json lists as skipped: what the entry must hold.

    ``relpaths`` gives the dataset's relative image paths (called only when the entry skipped images).
    """
    skipped = set(meta.get("skipped", []))
    if not skipped:
        return labels
    return labels[np.array([r not in skipped for r in relpaths()], dtype=bool)]
