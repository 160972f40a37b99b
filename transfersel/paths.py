"""Where transfersel keeps things on disk: the cache root shared by features, datasets and embeddings."""

from __future__ import annotations

import os
from pathlib import Path

from transfersel.errors import InputError

__all__ = ["default_cache_root", "read_text"]


def default_cache_root() -> Path:
    """``$TRANSFERSEL_CACHE``, else ``$XDG_CACHE_HOME/transfersel``, else ``~/.cache/transfersel``."""
    if os.environ.get("TRANSFERSEL_CACHE"):
        return Path(os.environ["TRANSFERSEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transfersel"


def read_text(path: str | Path, what: str, expected: str) -> str:
    """The text of a small UTF-8 file (a leading BOM dropped), or a one-line :class:`InputError`.

    ``what`` names the file's role ("ground-truth"), ``expected`` what it should hold ("a CSV with columns
    dataset,model,accuracy"); both go into the message for a missing, directory, binary or non-UTF-8 file.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} path {path} is a directory; pass a file: {expected}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist; pass {expected}") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path} ({exc.strerror}); pass {expected}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} file {path} is not UTF-8 text (byte {exc.start}); pass {expected}, saved as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{what} file {path} is binary (it holds NUL bytes); pass {expected}")
    return text
