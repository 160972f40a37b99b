"""Out-of-core scoring benchmark (spec scale.md §2): every metric on an N × D float32 memmap.

Writes the features (class means plus Gaussian noise, float32), labels, source logits and label
embeddings once under ``--dir`` (reused while N, D, C and K match; not in the repository: 1M × 2048 is
8 GB), then scores each metric in a fresh subprocess so that every peak is that metric's own. The parent
samples the child's ``/proc/<pid>/status`` RssAnon (anonymous memory: not the mapped file pages, which the
kernel can drop) every 20 ms. The baseline is one streamed float64 Gram ``XᵀX`` over the same file
(``_linalg.gram``); "above Gram" is a metric's RssAnon peak minus the Gram's (interpreter, NumPy, one D×D
and one row block), the spec's "above the D×D terms" up to the metric's extra D×D matrices.

    python scripts/bench_scale.py --n 100000              # write once, then score every metric
    nice -n 10 python scripts/bench_scale.py              # 1,000,000 × 2048, about 8 GB + 4 GB of logits
    python scripts/bench_scale.py --n 100000 --metrics sfda,logme
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

GRAM = "gram"
CHUNK_ROWS = 50_000  # rows generated and written at a time
POLL_SECONDS = 0.02


def _paths(root: Path) -> dict[str, Path]:
    return {k: root / f"{k}.npy" for k in ("features", "labels", "logits", "label_embeddings")}


def write_data(root: Path, n: int, d: int, c: int, k: int, seed: int = 0) -> dict[str, Path]:
    """Write the benchmark arrays under ``root`` unless files of these shapes are there already."""
    paths = _paths(root)
    meta = root / "meta.json"
    want = {"n": n, "d": d, "classes": c, "logit_dim": k, "seed": seed}
    if meta.is_file() and json.loads(meta.read_text()) == want and all(p.is_file() for p in paths.values()):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((c, d)).astype(np.float32) * 0.3
    head = rng.standard_normal((d, k)).astype(np.float32) / np.sqrt(d)
    labels = rng.integers(0, c, size=n)
    np.save(paths["labels"], labels)
    np.save(paths["label_embeddings"], rng.standard_normal((3, c, 32)))
    X = np.lib.format.open_memmap(paths["features"], mode="w+", dtype=np.float32, shape=(n, d))
    L = np.lib.format.open_memmap(paths["logits"], mode="w+", dtype=np.float32, shape=(n, k))
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        block = rng.standard_normal((rows.stop - rows.start, d), dtype=np.float32)
        block += means[labels[rows]]
        X[rows] = block
        L[rows] = block @ head
        print(f"  wrote {rows.stop:,}/{n:,} rows", end="\r", file=sys.stderr)
    X.flush()
    L.flush()
    del X, L
    meta.write_text(json.dumps(want))
    print(file=sys.stderr)
    return paths


def child(name: str, root: Path) -> None:
    """Score one metric (or the Gram baseline) on the memmaps and print ``{"seconds", "value"}``."""
    from transfersel.metrics import _linalg, get_metric

    paths = _paths(root)
    X = np.load(paths["features"], mmap_mode="r")
    t0 = time.perf_counter()
    if name == GRAM:
        value = float(np.trace(_linalg.gram(X)))
    else:
        metric = get_metric(name)
        args = {
            "logits": np.load(paths["logits"], mmap_mode="r") if "logits" in metric.needs else None,
            "label_embeddings": np.load(paths["label_embeddings"]),
        }
        y = np.load(paths["labels"])
        if metric.pool:
            value = metric.components(X, y, **args)
        else:
            value = metric(X, y, **args)
    print(json.dumps({"seconds": time.perf_counter() - t0, "value": value}))


def _rss_anon_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run_one(name: str, root: Path) -> dict:
    """Run the child for ``name``; return its seconds, value and RssAnon peak (MiB)."""
    cmd = [sys.executable, __file__, "--child", name, "--dir", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _rss_anon_kib(proc.pid))
            time.sleep(POLL_SECONDS)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        return {"name": name, "error": tail, "peak_mib": peak[0] / 1024}
    result = json.loads(out.strip().splitlines()[-1])
    return {"name": name, **result, "peak_mib": peak[0] / 1024}


STREAMING = {
    "sfda",
    "logme",
    "emms",
    "hscore",
    "hscore_reg",
    "transrate",
    "gbc",
    "leep",
    "nce",
    "ncti",
    "etran",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/work/scale-data"), help="where the memmaps live")
    ap.add_argument("--n", type=int, default=1_000_000, help="rows")
    ap.add_argument("--d", type=int, default=2048, help="feature dimension")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--logit-dim", type=int, default=1000, help="source classes of the logits (LEEP, NCE)")
    ap.add_argument("--metrics", default="all", help="comma-separated names, or 'all'")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.dir / f"n{args.n}_d{args.d}_c{args.classes}_k{args.logit_dim}"
    if args.child:
        child(args.child, args.dir)
        return
    from transfersel.metrics import list_metrics

    write_data(root, args.n, args.d, args.classes, args.logit_dim)
    names = (
        [m.name for m in list_metrics(pool=None) if m.name != "auto"]
        if args.metrics == "all"
        else args.metrics.split(",")
    )
    print(f"N = {args.n:,}, D = {args.d}, C = {args.classes}, K = {args.logit_dim}, data in {root}")
    base = run_one(GRAM, root)
    print(f"streamed float64 Gram: {base['seconds']:.1f} s, RssAnon peak {base['peak_mib']:.0f} MiB")
    print(f"{'metric':<11} {'seconds':>8} {'× Gram':>7} {'RssAnon MiB':>12} {'above Gram':>11}  streams")
    for name in names:
        r = run_one(name, root)
        above = r["peak_mib"] - base["peak_mib"]
        kind = "yes" if name in STREAMING else "subsample"
        if "error" in r:
            failed = f"{'failed':>8} {'':>7} {r['peak_mib']:>12.0f} {above:>11.0f}"
            print(f"{name:<11} {failed}  {kind}: {r['error']}")
            continue
        ratio = r["seconds"] / base["seconds"]
        print(f"{name:<11} {r['seconds']:>8.1f} {ratio:>7.2f} {r['peak_mib']:>12.0f} {above:>11.0f}  {kind}")


if __name__ == "__main__":
    main()
