#!/usr/bin/env python3
"""A regression task from the shared sign_digits images: each hand photo rotated and scaled by known amounts.

Every image is scaled by ``s`` (uniform in [0.6, 1.0]) about its centre, then rotated by ``a`` degrees
(uniform in [-45, 45], counter-clockwise positive) about its centre; the uncovered area is filled with the
median colour of the image's border (the photos' plain background, so the fill adds no edge of its own).
``angle`` and ``scale`` are the continuous targets; ``caption`` says the same in words, for the text-target
path ("a hand sign rotated by 30 degrees and scaled to 80 percent").

Each image's (a, s) is drawn from a generator seeded by ``--seed`` and the image's relative path, so a subset
(``--train-per-class 2``) gets the same values for the same files. Splits: train = the 1000 images the offline
benchmark trains on (``open_dataset(..., max_per_class=100, seed=0)``), test = the sign_digits test split
(<= 200 per class: all 619). Written under ``--out``:

    train/<digit>/<name>.png, test/<digit>/<name>.png   the transformed images (an ImageFolder tree)
    train_targets.csv, test_targets.csv                 path,angle,scale,caption (path relative to the split
                                                        folder: the key `rank --key-column path` matches)

The digit folders are kept so the tree is a valid dataset for ``extract``/``finetune`` (and the validation
split stays stratified); the digit itself is not a target. The labels' sha256 is printed (documented in
benchmarks/offline/REGRESSION.md).

usage: python scripts/make_regression_task.py [--out ~/.cache/transfersel/regression_task]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from transfersel.data import open_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRANSFERSEL_SHARED", ROOT.parent / "shared")).resolve()
ANGLE_RANGE, SCALE_RANGE = (-45.0, 45.0), (0.6, 1.0)
CAPTION = "a hand sign rotated by {angle:.0f} degrees and scaled to {percent:.0f} percent"
COLUMNS = ("path", "angle", "scale", "caption")


def draw(relpath: str, seed: int) -> tuple[float, float]:
    """The (angle in degrees, scale) of one image: a function of the seed and its relative path only."""
    digest = hashlib.sha256(f"{seed}\0{relpath}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    angle, scale = rng.uniform(*ANGLE_RANGE), rng.uniform(*SCALE_RANGE)
    return round(float(angle), 3), round(float(scale), 4)


def transform(image: Image.Image, angle: float, scale: float) -> Image.Image:
    """``image`` scaled by ``scale``, rotated by ``angle`` degrees about its centre; same size."""
    image = image.convert("RGB")
    w, h = image.size
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (w, h), fill)
    canvas.paste(small, ((w - small.width) // 2, (h - small.height) // 2))
    return canvas.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)


def caption(angle: float, scale: float) -> str:
    return CAPTION.format(angle=angle, percent=100 * scale)


def make_task(
    source: Path, out: Path, *, train_per_class: int = 100, test_per_class: int = 200, seed: int = 0
) -> dict[str, str]:
    """Write the task under ``out``; returns the sha256 of each split's targets CSV."""
    sums = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        ds = open_dataset(source, split=split, max_per_class=per_class, seed=0)
        lines = [",".join(COLUMNS)]
        for path, rel in zip(ds.paths, ds.relpaths(), strict=True):
            angle, scale = draw(rel, seed)
            name = str(Path(rel).with_suffix(".png"))
            target = out / split / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as im:
                transform(im, angle, scale).save(target)
            lines.append(f'{name},{angle:.3f},{scale:.4f},"{caption(angle, scale)}"')
        text = "\n".join(lines) + "\n"
        (out / f"{split}_targets.csv").write_text(text, encoding="utf-8")
        sums[split] = hashlib.sha256(text.encode()).hexdigest()
    return sums


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=SHARED / "datasets" / "sign_digits")
    ap.add_argument("--out", type=Path, default=Path("~/.cache/transfersel/regression_task").expanduser())
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sums = make_task(
        args.source,
        args.out,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
    )
    for split, digest in sums.items():
        print(f"{split}_targets.csv sha256 {digest}")


if __name__ == "__main__":
    main()
