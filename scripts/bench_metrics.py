#!/usr/bin/env python3
"""Benchmark every metric against the linear-algebra lower bound (spec §7.1), side by side.

Default problem: N=10,000, D=2,048, C=100, float32 features with a CNN-like decaying spectrum, 1000-way
source logits, EMMS label embeddings K=3 × D2=1024. Each metric runs in its own fresh subprocess, which
first times the bound — one float64 XᵀX plus one D×D eigh — and then the metric (own validation, own
Gram: nothing shared), so every ratio is measured in one process on the same loaded machine. Peak memory
is the growth of the process's peak RSS while scoring (high-water mark reset just before), divided by
the size of the feature matrix.

usage: python scripts/bench_metrics.py [--n 10000 --d 2048 --c 100] [--metric sfda ...] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

TARGETS = {  # issue 2: ratio to the bound
    "sfda": 2,
    "logme": 2,
    "hscore": 2,
    "hscore_reg": 2,
    "transrate": 2,
    "emms": 2,
    "nleep": 20,
    "leep": 1,
    "nce": 1,
    "gbc": 1,
    "knn": 1,
}


def make_problem(n: int, d: int, c: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Class-structured float32 features whose covariance spectrum decays like real CNN features."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % c)
    spectrum = (1.0 + np.arange(d)) ** -0.75  # per-direction std; power-law decay
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    means = rng.standard_normal((c, d)) * spectrum * 2.0
    noise = rng.standard_normal((n, d)) * spectrum
    features = np.maximum((means[labels] + noise) @ rotation.T + 0.1, 0).astype(np.float32)  # ReLU-like
    head = rng.standard_normal((d, 1000)).astype(np.float32) / np.sqrt(d)
    logits = (features @ head) * 8.0
    embeddings = rng.standard_normal((3, c, 1024)).astype(np.float32)
    return {"features": features, "labels": labels, "logits": logits, "label_embeddings": embeddings}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> int:
    """Reset the peak-RSS high-water mark to the current RSS (Linux ≥ 4.0); return current RSS bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def run_one(folder: Path, metric: str, repeat: int) -> dict:
    """Child process: time the bound and the metric, report seconds, ratio and memory growth."""
    import scipy.linalg

    from transfersel.metrics import get_metric

    data = {k: np.load(folder / f"{k}.npy") for k in ("features", "labels", "logits", "label_embeddings")}
    X = data["features"]
    m = get_metric(metric)
    kwargs = {k: data[k] for k in m.needs}

    def bound() -> float:
        t = time.perf_counter()
        X64 = X.astype(np.float64)
        G = X64.T @ X64
        del X64
        scipy.linalg.eigh(G, driver="evd", check_finite=False)
        return time.perf_counter() - t

    bounds = [bound()]  # also warms BLAS threads
    seconds, growth = [], 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(repeat):
            base = reset_peak_rss()
            t = time.perf_counter()
            value = m(X, data["labels"], **kwargs)
            seconds.append(time.perf_counter() - t)
            growth = max(growth, peak_rss() - base)
            bounds.append(bound())
    return {
        "metric": metric,
        "score": value,
        "seconds": min(seconds),
        "bound_seconds": min(bounds),
        "peak_extra_over_features": growth / X.nbytes,
        "warnings": sorted({str(w.message).split(";")[0][:70] for w in caught}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--c", type=int, default=100)
    ap.add_argument("--metric", action="append", help="metric name (repeatable); default: all")
    ap.add_argument("--repeat", type=int, default=1, help="runs per metric; the fastest counts")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "METRIC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), args.child[1], args.repeat)))
        return

    from transfersel.metrics import list_metrics

    names = args.metric or [m.name for m in list_metrics()]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for k, a in make_problem(args.n, args.d, args.c).items():
            np.save(Path(tmp) / f"{k}.npy", a)
        print(
            f"problem N={args.n} D={args.d} C={args.c} float32, logits 1000-way, EMMS K=3 D2=1024 "
            f"(built in {time.perf_counter() - t:.1f}s); features {args.n * args.d * 4 / 2**20:.0f} MiB"
        )
        header = ("metric", "seconds", "bound s", "ratio", "target", "peak/X")
        print("{:11s} {:>8s} {:>8s} {:>6s} {:>6s} {:>7s}  score".format(*header))
        rows = []
        for name in names:
            cmd = [sys.executable, __file__, "--child", tmp, name, "--repeat", str(args.repeat)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name:11s} FAILED: {out.stderr.strip().splitlines()[-1] if out.stderr else '?'}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["ratio"] = r["seconds"] / r["bound_seconds"]
            target = TARGETS.get(name)
            flag = "" if target is None or r["ratio"] <= target else "  << over target"
            print(
                f"{name:11s} {r['seconds']:8.3f} {r['bound_seconds']:8.3f} {r['ratio']:6.2f} "
                f"{'' if target is None else f'≤{target}':>6s} {r['peak_extra_over_features']:7.2f}  "
                f"{r['score']:.6g}{flag}" + (f"  [{'; '.join(r['warnings'])}]" if r["warnings"] else "")
            )
            rows.append(r)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
