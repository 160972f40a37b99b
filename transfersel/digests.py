"""Content digests of dataset files, remembered by (size, mtime) so that only new or changed files are read.

A dataset's fingerprint (and so every feature-cache entry and fine-tuning run keyed by it) must follow the
bytes of its images, not where or when they were written: a copy, a fresh checkout or a re-laid shared
folder changes every mtime but no image. Hashing every file on every open would cost a full read of the
dataset, so the digests are memoised per dataset folder under ``<cache root>/file-digests/``: a file whose
size and mtime match its memo entry is not read again. The memo is only an accelerator: a missing,
unreadable or unwritable memo means the files are hashed again, never a different fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from transfersel.paths import default_cache_root

__all__ = ["file_digest", "file_digests"]

MISSING = "missing"


def _memo_path(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
    return default_cache_root() / "file-digests" / f"{key}.json"


def _load(path: Path) -> dict[str, list]:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _save(path: Path, memo: dict[str, list]) -> None:
    """Atomic replace; concurrent writers lose only each other's additions (hashed again next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(memo, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: the digests are recomputed on the next open


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_digests(paths: list[Path], rel: list[str], root: Path) -> list[str]:
    """One content digest per file (``"missing"`` for a file that cannot be read), in ``paths`` order.

    Args:
        paths: the files; rel: their names relative to ``root`` (the memo's keys); root: the dataset folder.
    """
    memo_path = _memo_path(root)
    memo, changed, out = _load(memo_path), False, []
    for p, name in zip(paths, rel, strict=True):
        try:
            st = p.stat()
        except OSError:
            out.append(MISSING)
            continue
        entry = memo.get(name)
        if isinstance(entry, list) and entry[:2] == [st.st_size, st.st_mtime_ns] and len(entry) == 3:
            out.append(str(entry[2]))
            continue
        try:
            digest = _digest(p)
        except OSError:
            out.append(MISSING)
            continue
        memo[name], changed = [st.st_size, st.st_mtime_ns, digest], True
        out.append(digest)
    if changed:
        _save(memo_path, memo)
    return out


def file_digest(path: Path) -> str:
    """The content digest of one file (memoised like :func:`file_digests`, in its folder's memo)."""
    path = Path(path)
    digest = file_digests([path], [path.name], path.parent)[0]
    if digest == MISSING:
        raise FileNotFoundError(f"cannot read {path}")
    return digest
