#!/usr/bin/env python3
"""Images/s of ``transfersel.extract`` against a bare forward loop of the same model, same process.

The bare loop runs the model on tensors decoded and normalised beforehand (not timed): the speed of the
hardware. ``extract`` is timed end to end on a fresh cache (``force``): model load, decoding, forward,
memmap writes, commit. The two alternate ``--repeat`` times and the best of each is kept, so both see the
same machine. Default: the shared zoo's MobileNetV2 (224 px) on clothing photos (160x213 JPEG).

Two clocks: wall time (what a user waits; meaningful on an idle machine or a GPU) and this process's CPU
time (images per CPU-second; robust when other jobs share the cores, valid with ``--workers 0`` on CPU,
where all the work is in this process).

usage: python scripts/bench_extract.py [--model mobilenetv2_100_224_imagenet_quant] [--n 128]
       [--batch-size 32] [--device auto] [--workers 0] [--amp] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from transfersel.data import open_dataset
from transfersel.extract import decode, extract, torch_device
from transfersel.store import FeatureStore
from transfersel.zoo import load_zoo

SHARED = Path(__file__).resolve().parents[2] / "shared"


def bare_loop(entry, paths, dev, batch_size: int, amp: bool) -> tuple[float, float]:
    """(wall, CPU) images/s of the forward pass alone on pre-decoded, pre-normalised tensors."""
    model = entry.load()
    model.module.to(dev)
    pre = model.preprocess
    x = model.normalise(torch.stack([decode(p, pre) for p in paths]).to(dev))
    batches = list(x.split(batch_size))
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else torch.autocast(dev.type, enabled=False)
    with torch.inference_mode(), ctx:
        model.forward(batches[0])  # warm-up: first-call compilation of TorchScript graphs
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            feats, logits = model.forward(b)
            feats.float().cpu()  # the same device-to-host copy extract does
            if logits is not None:
                logits.float().cpu()
        _sync(dev)
    return len(paths) / (time.perf_counter() - t0), len(paths) / (time.process_time() - c0)


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=str(SHARED / "zoo" / "zoo.yaml"))
    ap.add_argument("--model", default="mobilenetv2_100_224_imagenet_quant")
    ap.add_argument("--data", default=str(SHARED / "datasets" / "clothing"))
    ap.add_argument("--n", type=int, default=128, help="images (taken evenly across classes)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    (entry,) = load_zoo(args.zoo, only=[args.model])
    probe = open_dataset(args.data, split="train")
    dataset = open_dataset(args.data, split="train", max_per_class=-(-args.n // len(probe.classes)))
    dev = torch_device(args.device)
    print(f"{args.model} on {len(dataset)} images of {dataset.name}, batch {args.batch_size}, {dev}, "
          f"workers {args.workers}, amp {args.amp}, torch threads {torch.get_num_threads()}")  # fmt: skip
    best = {"bare": [0.0, 0.0], "extract": [0.0, 0.0]}  # wall, cpu
    with tempfile.TemporaryDirectory() as cache:
        store = FeatureStore(cache)
        for r in range(args.repeat):
            b = bare_loop(entry, dataset.paths, dev, args.batch_size, args.amp)
            c0 = time.process_time()
            report = extract(
                [entry], dataset, store=store, device=args.device, batch_size=args.batch_size,
                workers=args.workers, amp=args.amp, force=True, progress=False,
            )  # fmt: skip
            assert not report.failures, report.failures
            e = (len(dataset) / report.seconds, len(dataset) / (time.process_time() - c0))
            for clock in (0, 1):
                best["bare"][clock] = max(best["bare"][clock], b[clock])
                best["extract"][clock] = max(best["extract"][clock], e[clock])
            print(f"  run {r + 1}: " + _line(b, e))
    print("best:  " + _line(best["bare"], best["extract"]))


def _line(bare, ext) -> str:
    return (
        f"wall: bare {bare[0]:7.1f} img/s, extract {ext[0]:7.1f} img/s, ratio {ext[0] / bare[0]:.3f} | "
        f"cpu: bare {bare[1]:7.1f} img/cpu-s, extract {ext[1]:7.1f} img/cpu-s, ratio {ext[1] / bare[1]:.3f}"
    )


if __name__ == "__main__":
    main()
