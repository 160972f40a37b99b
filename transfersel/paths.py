"""Where transfersel keeps things on disk: the cache root shared by features, datasets and embeddings."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_root"]


def default_cache_root() -> Path:
    """``$TRANSFERSEL_CACHE``, else ``$XDG_CACHE_HOME/transfersel``, else ``~/.cache/transfersel``."""
    if os.environ.get("TRANSFERSEL_CACHE"):
        return Path(os.environ["TRANSFERSEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transfersel"
