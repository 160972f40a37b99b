"""The README's main job: the shared checker scores every test vector with every metric and agrees."""

from __future__ import annotations

import subprocess
import sys

from conftest import SHARED, VECTORS


def test_shared_checker_passes_on_every_public_vector():
    out = subprocess.run(
        [sys.executable, str(SHARED / "tools" / "check_metrics.py"), str(VECTORS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, "\n".join(line for line in lines if " ok " not in line)
    assert lines[-1] == "44/44 metric-vector pairs match the reference"
