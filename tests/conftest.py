"""Shared fixtures: the public test vectors and shared assets in ../shared (override: TRANSFERSEL_SHARED)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRANSFERSEL_SHARED", REPO.parent / "shared")).resolve()
VECTORS = SHARED / "testvectors"
VECTOR_NAMES = ["small_gauss", "mid_gauss", "wide_random", "relu_gauss"]


def load_vector(name: str) -> dict:
    """One public test vector as read-only arrays plus its reference scores under ``"reference"``."""
    z = np.load(VECTORS / f"{name}.npz")
    out = {k: z[k] for k in z.files}
    for a in out.values():
        a.flags.writeable = False
    out["reference"] = json.loads((VECTORS / "expected.json").read_text())[name]["reference"]
    return out


@pytest.fixture(scope="session")
def vectors() -> dict[str, dict]:
    if not VECTORS.is_dir():
        pytest.fail(f"shared test vectors not found at {VECTORS}; set TRANSFERSEL_SHARED")
    return {n: load_vector(n) for n in VECTOR_NAMES}
