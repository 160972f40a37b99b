"""Target datasets: an ImageFolder tree (with or without ``train/``/``test/``), a CSV of ``path,label``, or a
torchvision dataset name (``torchvision:CIFAR10``, materialised once as an ImageFolder in the cache).

Sample order is deterministic (classes sorted, files sorted within a class); ``max_per_class`` keeps a seeded
subset in that order. The fingerprint hashes the split, the classes, and every file's relative path, label
and content digest (:mod:`transfersel.digests`), so the feature cache notices when the data change and
survives a copy or re-lay of unchanged files.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfersel.digests import file_digests
from transfersel.errors import InputError, TransferabilityWarning

__all__ = ["IMAGE_EXTENSIONS", "Dataset", "open_dataset"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class Dataset:
    """An ordered list of labelled image files. ``labels`` are int64 codes into ``classes``."""

    name: str
    root: Path
    split: str | None
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.paths)

    def relpaths(self) -> list[str]:
        return [_rel(p, self.root) for p in self.paths]


def open_dataset(
    path: str | Path,
    *,
    split: str | None = "train",
    max_per_class: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Open a dataset folder, CSV or ``torchvision:NAME``; ``split`` picks ``<path>/<split>/`` when present.

    A folder without split subfolders is used whole (``split`` becomes None).
    """
    if max_per_class is not None and max_per_class < 1:
        raise InputError(f"max_per_class must be >= 1, got {max_per_class}")
    text = str(path)
    if text.startswith("torchvision:"):
        path = _torchvision(text.split(":", 1)[1], split)
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        name, root, used_split, items = path.stem, path.parent, split, _read_csv(path, split)
        if items and items[0][2] is None:
            used_split = None
        if items and not any(p.is_file() for p, _, _ in items):
            raise InputError(
                f"none of the {len(items)} image paths listed in {path} exists; relative paths are read "
                "from the CSV's folder"
            )
    elif path.is_dir():
        name = path.name
        root, used_split = _split_root(path, split)
        items = _scan_folder(root)
    else:
        raise InputError(
            f"dataset {path} is neither a folder nor a .csv file; pass an ImageFolder folder, a CSV of "
            "path,label, or torchvision:NAME"
        )
    if name in ("train", "test", "val") and used_split is None:
        name = path.parent.name  # <name>/train passed directly
    classes = sorted({label for _, label, _ in items})
    if not items:
        raise InputError(f"dataset {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    code = {c: i for i, c in enumerate(classes)}
    paths = [p for p, _, _ in items]
    labels = np.array([code[label] for _, label, _ in items], dtype=np.int64)
    order = np.lexsort((np.array([_rel(p, root) for p in paths]), labels))
    paths, labels = [paths[i] for i in order], labels[order]
    if max_per_class is not None:
        rng = np.random.default_rng(seed)
        keep = []
        for c in range(len(classes)):
            idx = np.flatnonzero(labels == c)
            keep.extend(np.sort(rng.permutation(idx)[:max_per_class]))
        keep = np.sort(np.array(keep, dtype=np.int64))
        paths, labels = [paths[i] for i in keep], labels[keep]
    return Dataset(
        name, root, used_split, paths, labels, classes, _fingerprint(root, used_split, paths, labels, classes)
    )


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _split_root(path: Path, split: str | None) -> tuple[Path, str | None]:
    splits = sorted(d.name for d in path.iterdir() if d.is_dir() and d.name in ("train", "test", "val"))
    if split and (path / split).is_dir():
        return path / split, split
    if split and splits:
        raise InputError(f"dataset {path} has no split {split!r}; use --split {' or '.join(splits)}")
    return path, None


def _scan_folder(root: Path) -> list[tuple[Path, str, None]]:
    """Every image under ``root/<class>/``, each file once: symlinked folders are followed only into folders
    not read yet (no loops, no other class's folder); a file reached twice (links) counts once."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"dataset folder {root} has no class subfolders; expected <root>/<class>/<image>")
    seen_dirs = {_node(root)} | {_node(root / c) for c in classes}
    seen_files: set[object] = set()
    items, pruned = [], []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            keep = []
            for d in sorted(dirnames):
                node = _node(Path(dirpath) / d)
                (pruned if node in seen_dirs else keep).append(d)
                seen_dirs.add(node)
            dirnames[:] = keep
            for f in sorted(filenames):
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                    p = Path(dirpath) / f
                    node = _node(p)
                    if node not in seen_files:
                        seen_files.add(node)
                        items.append((p, c, None))
    if pruned:
        warnings.warn(
            f"dataset {root}: {len(pruned)} symlinked folder(s) lead to folders already read (a loop or "
            f"another class); not followed, e.g. {pruned[0]}",
            TransferabilityWarning,
            stacklevel=3,
        )
    return items


def _node(p: Path) -> object:
    """The identity of the file or folder ``p`` leads to (device, inode), or ``p`` itself if it is broken."""
    try:
        st = p.stat()
    except OSError:
        return p
    return (st.st_dev, st.st_ino)


def _read_csv(path: Path, split: str | None) -> list[tuple[Path, str, str | None]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"dataset {path} is not a text CSV of path,label ({type(exc).__name__}); pass a UTF-8 CSV, an "
            "ImageFolder folder or torchvision:NAME"
        ) from None
    if rows and rows[0][:2] == ["path", "label"]:
        header, rows = rows[0], rows[1:]
    else:
        header = ["path", "label", "split"][: len(rows[0]) if rows else 2]
    has_split = "split" in header
    items = []
    for i, r in enumerate(rows):
        if len(r) < 2:
            raise InputError(f"{path} line {i + 1}: expected path,label[,split]; got {','.join(r)!r}")
        if has_split and split and r[header.index("split")] != split:
            continue
        p = Path(r[0]).expanduser()
        items.append((p if p.is_absolute() else path.parent / p, r[1], split if has_split else None))
    if has_split and split and not items:
        raise InputError(f"{path} has no rows with split {split!r}")
    return items


def _fingerprint(
    root: Path, split: str | None, paths: list[Path], labels: np.ndarray, classes: list[str]
) -> str:
    h = hashlib.sha256(f"{split}\n{chr(31).join(classes)}\n".encode())
    rel = [_rel(p, root) for p in paths]
    for name, y, digest in zip(rel, labels.tolist(), file_digests(paths, rel, root), strict=True):
        h.update(f"{name}\t{y}\t{digest}\n".encode())
    return h.hexdigest()


def _torchvision(name: str, split: str | None) -> Path:
    """Download a torchvision dataset once; write it as ``<cache>/datasets/<name>/<split>/<class>/i.png``."""
    from torchvision import datasets

    from transfersel.paths import default_cache_root

    cls = getattr(datasets, name, None)
    if cls is None:
        raise InputError(f"torchvision has no dataset {name!r}")
    out = default_cache_root() / "datasets" / name
    splits = {"train": True, "test": False}
    want = split or "train"
    if want not in splits:
        raise InputError(f"torchvision:{name} supports --split train or test, got {want!r}")
    done = out / want / ".complete"
    if not done.exists():
        try:
            ds = cls(str(out / "raw"), train=splits[want], download=True)
        except Exception as exc:
            raise InputError(
                f"could not download torchvision:{name} ({' '.join(str(exc).split())[:150]}); "
                "download it elsewhere and pass its ImageFolder folder"
            ) from None
        names = list(getattr(ds, "classes", []))
        for i in range(len(ds)):
            img, y = ds[i]
            folder = out / want / (names[y] if names else str(y))
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:06d}.png")
        done.touch()
    return out
