"""Cost of the cache's integrity check against the cost of reading the entry.

For each entry (warm page cache, best of ``--repeat``): ``read`` = opening it as the store does without
checksums and using every byte once (a copy of each array); ``load`` = the plainest read, np.load of each
file; ``check`` = the checksum pass over the freshly memory-mapped arrays. Target: check <= 5 % of read.

    python scripts/bench_cache.py                      # synthetic entries of typical sizes
    python scripts/bench_cache.py --cache-dir DIR      # every entry of an existing cache (read only)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transfersel.cache_check import array_digest
from transfersel.store import CachedFeatures

SIZES = [(1_000, 64, 10), (10_000, 512, 1000), (50_000, 1280, 1000), (50_000, 2048, 100)]


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def synthetic(root: Path, n: int, d: int, k: int) -> Path:
    """An entry folder with random arrays and the meta.json (with checksums) the store would write."""
    import json

    rng = np.random.default_rng(0)
    path = root / f"syn.train-000000000000/m{n}x{d}-000000000000"
    path.mkdir(parents=True)
    arrays = {
        "features": rng.standard_normal((n, d), dtype=np.float32),
        "logits": rng.standard_normal((n, k), dtype=np.float32),
        "labels": rng.integers(0, 10, n).astype(np.int64),
    }
    for name, arr in arrays.items():
        np.save(path / f"{name}.npy", arr)
    sums = {f"{k}.npy": array_digest(np.load(path / f"{k}.npy", mmap_mode="r")) for k in arrays}
    meta = {"model": path.name, "dataset": "syn", "classes": [str(i) for i in range(10)], "n": n, "d": d}
    (path / "meta.json").write_text(json.dumps({**meta, "checksums": sums}))
    return path


def measure(path: Path, repeat: int) -> tuple[float, float, float, int]:
    files = sorted(path.glob("*.npy"))

    def read() -> None:  # as the store serves an entry, without checksums, then every byte used once
        cf = CachedFeatures.open(path, verify=False)
        for a in (cf.features, cf.logits, cf.labels):
            if a is not None:
                np.array(a)

    def load() -> None:  # the plainest read: np.load of each file into memory
        for f in files:
            np.load(f)

    read()  # warm the page cache
    t_read, t_load = best(read, repeat), best(load, repeat)
    t_check = []
    for _ in range(repeat):  # checksums over freshly mapped arrays: their page faults count too
        arrays = [(np.load(f, mmap_mode="r"), f) for f in files]
        t = time.perf_counter()
        for a, f in arrays:
            array_digest(a, f)
        t_check.append(time.perf_counter() - t)
    CachedFeatures.open(path, verify=True)  # the entry is sound: the measured checksums all match
    return t_read, t_load, min(t_check), sum(f.stat().st_size for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, help="measure this cache's entries instead of synthetic ones")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    head = ["MB", "read ms", "load ms", "check ms", "/read", "/load"]
    print(f"{'entry':48s} " + " ".join(f"{h:>8s}" for h in head))
    total = np.zeros(3)
    with tempfile.TemporaryDirectory() as tmp:
        if args.cache_dir is not None:
            paths = sorted(p.parent for p in args.cache_dir.glob("*/*/meta.json"))
        else:
            paths = [synthetic(Path(tmp), n, d, k) for n, d, k in SIZES]
        for path in paths:
            t_read, t_load, t_check, nbytes = measure(path, args.repeat)
            total += (t_read, t_load, t_check)
            name = f"{path.parent.name}/{path.name}"[-48:]
            ms = f"{t_read * 1e3:8.2f} {t_load * 1e3:8.2f} {t_check * 1e3:8.3f}"
            print(f"{name:48s} {nbytes / 1e6:8.1f} {ms} {t_check / t_read:8.1%} {t_check / t_load:8.1%}")
    r, lo, c = total
    print(f"{'all':48s} {'':8s} {r * 1e3:8.1f} {lo * 1e3:8.1f} {c * 1e3:8.2f} {c / r:8.1%} {c / lo:8.1%}")


if __name__ == "__main__":
    main()
