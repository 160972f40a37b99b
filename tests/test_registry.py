"""Third-party metrics register through the ``transfersel.metrics`` entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_entry_point_metric_is_discovered_and_callable(tmp_path):
    (tmp_path / "my_metric.py").write_text(
        textwrap.dedent(
            '''
            from transfersel.metrics import register_metric

            @register_metric("class_balance", description="Normalised entropy of the label histogram",
                             reference="test plug-in")
            def class_balance(inputs, *, base: float = 2.0) -> float:
                import numpy as np
                p = inputs.counts / inputs.N
                return float(-(p * np.log(p)).sum() / np.log(inputs.C))
            '''
        )
    )
    dist = tmp_path / "my_metric-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-metric\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[transfersel.metrics]\nclass_balance = my_metric\n")
    code = (
        "import numpy as np; from transfersel.metrics import get_metric, list_metrics;"
        "m = get_metric('class_balance'); assert 'class_balance' in [x.name for x in list_metrics()];"
        "print(m(np.random.default_rng(0).normal(size=(8, 3)), ['a'] * 4 + ['b'] * 4), m.options)"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.0", "{'base':", "2.0}"]
