"""Feature extraction: every zoo model over a dataset, into the crash-safe cache.

Models whose preprocessing *geometry* (channels, resize, crop, filter) is equal form a group: each image is
decoded and resized once per group, as uint8, and every model of the group runs on that batch (mean/std
normalisation happens on the model's device). A model that fails to load or to run is recorded with its
reason and the others go on; unreadable images are skipped and listed. Finished entries are published one
by one, so an interrupted run keeps them and the rerun does only what is missing.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.data import Dataset
from transfersel.errors import InputError, TransferabilityWarning, TransferselError
from transfersel.store import CachedFeatures, EntryWriter, FeatureStore
from transfersel.zoo import LoadedModel, ModelEntry, Preprocess

__all__ = ["ExtractReport", "decode", "extract", "parse_shard", "to_8bit", "torch_device"]


@dataclass
class ExtractReport:
    """Per model: cached features (in zoo order) or the reason it failed; skipped images with their reason."""

    features: dict[str, CachedFeatures]
    failures: dict[str, str]
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # image path -> why it could not be read
    extracted: list[str] = field(default_factory=list)  # models computed by this run (the rest were cached)
    damaged: dict[str, str] = field(default_factory=dict)  # model -> why its cache entry was recomputed
    images: int = 0  # images pushed through a model by this run (for images/s)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1-based: ``1/4`` .. ``4/4``) -> ``(i, n)``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 1/4), got {text!r}") from None
    _check_shard((i, n))
    return i, n


def _check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if not (n >= 1 and 1 <= i <= n):
        raise InputError(f"shard {i}/{n} is out of range; use i/n with 1 <= i <= n")


def torch_device(device: str) -> Any:
    """The ``torch.device`` for ``device`` by the one rule of :func:`transfersel.metrics.resolve_device`
    (``auto``: CUDA when visible, else CPU; an explicit name such as ``mps`` or ``cuda:1`` is kept)."""
    import torch

    from transfersel.metrics import resolve_device

    try:
        return torch.device(resolve_device(device))
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


def decode(path: Path, pre: Preprocess) -> Any:
    """One image file -> uint8 tensor (C, H, W) with ``pre``'s geometry (PIL resize, as torchvision does)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    with Image.open(path) as im:
        img = to_8bit(im, "L" if pre.channels == 1 else "RGB")
    resize = pre.resize if isinstance(pre.resize, int) else list(pre.resize)
    img = F.resize(img, resize, interpolation=InterpolationMode(pre.interpolation))
    img = F.center_crop(img, list(pre.size))
    return F.pil_to_tensor(img)


def to_8bit(im: Any, mode: str) -> Any:
    """A PIL image of any mode as 8-bit ``mode`` (``"L"`` or ``"RGB"``); raise ValueError if it has no
    standard 8-bit meaning (32-bit float, integers beyond 16 bits, LAB), so the image is skipped and listed.

    16-bit grey (``I;16*``, or ``I`` as older Pillow opens it) is scaled by 255/65535: PIL's own convert
    clips it at 255 instead, turning almost every pixel white.
    """
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"{im.mode} image with values outside 0..65535; save it as 8- or 16-bit")
        grey = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        im = Image.fromarray(grey, "L")
    elif im.mode == "F":
        raise ValueError("32-bit float image (mode F) has no standard 8-bit scaling; save it as 8- or 16-bit")
    elif im.mode in ("La", "RGBa"):  # premultiplied alpha: PIL converts only the straight form onward
        im = im.convert(im.mode.upper())
    return im.convert(mode)


class _Images:
    """Map-style dataset of decoded images; a failure is returned, not raised, so the batch goes on."""

    def __init__(self, paths: Sequence[Path], pre: Preprocess) -> None:
        self.paths, self.pre = paths, pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            return i, decode(self.paths[i], self.pre), None
        except Exception as exc:  # corrupt, truncated or unreadable file
            return i, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _collate(items: list[tuple[int, Any, str | None]]) -> tuple[Any, Any, list[tuple[int, str]]]:
    import torch

    good = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, err) for i, t, err in items if t is None]
    if not good:
        return torch.empty(0, dtype=torch.int64), None, bad
    return torch.tensor([i for i, _ in good]), torch.stack([t for _, t in good]), bad


def extract(
    zoo: list[ModelEntry],
    dataset: Dataset,
    *,
    store: FeatureStore | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    amp: bool = False,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> ExtractReport:
    """Features of every zoo model (or of shard ``i/n`` of them) on ``dataset``, from the cache or computed.

    Cached entries are returned without loading the model. ``shard=(i, n)`` (1-based) takes the models at
    zoo positions ``i-1, i-1+n, ...``, so ``n`` processes sharing one cache split the work. ``amp`` runs the
    forward pass under autocast (bfloat16 where supported, else float16). ``force`` recomputes.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InputError(f"workers must be an integer >= 0 (0: decode in this process), got {workers!r}")
    if shard is not None:
        _check_shard(shard)
        zoo = [e for j, e in enumerate(zoo) if j % shard[1] == shard[0] - 1]
    store = store if store is not None else FeatureStore()
    store.clean_stale()
    report = ExtractReport({}, {}, 0.0)
    todo: list[ModelEntry] = []
    for e in zoo:
        hit, damage = (None, None) if force else store.lookup(dataset, e)
        if damage is not None:
            report.damaged[e.name] = damage
            where = store.entry_dir(dataset, e)
            warnings.warn(
                f"cache entry of {e.name} at {where} is damaged ({damage}); recomputing it",
                TransferabilityWarning,
                stacklevel=2,
            )
        if hit is not None:
            report.features[e.name] = hit
        else:
            todo.append(e)
    groups: dict[tuple[Any, ...], list[tuple[ModelEntry, Preprocess]]] = {}
    for e in todo:
        try:
            pre = e.preprocess()
        except Exception as exc:
            report.failures[e.name] = _reason(exc)
            continue
        groups.setdefault(pre.geometry, []).append((e, pre))
    if groups:
        dev = torch_device(device)
        with _Progress(progress, len(todo), len(dataset)) as bar:
            for members in groups.values():
                _run_group(members, dataset, store, dev, batch_size, workers, amp, bar, report)
    order = [e.name for e in zoo]
    report.features = {n: report.features[n] for n in order if n in report.features}
    report.seconds = time.perf_counter() - t0
    return report


def _run_group(
    members: list[tuple[ModelEntry, Preprocess]],
    dataset: Dataset,
    store: FeatureStore,
    dev: Any,
    batch_size: int,
    workers: int,
    amp: bool,
    bar: _Progress,
    report: ExtractReport,
) -> None:
    """Decode the dataset once with the group's geometry and run every model of the group on each batch."""
    import torch

    t0 = time.perf_counter()
    live: dict[str, tuple[ModelEntry, LoadedModel, EntryWriter]] = {}
    try:
        for e, _ in members:
            bar.loading(e.name)
            try:
                loaded = e.load()
                loaded.module.to(dev)
                if dev.type == "cuda" and isinstance(loaded.module, torch.nn.Module):
                    loaded.module.to(memory_format=torch.channels_last)
                live[e.name] = (e, loaded, store.writer(dataset, e))
            except Exception as exc:
                report.failures[e.name] = _reason(exc)
                bar.model_done()
        if not live:
            return
        bar.start_group(list(live))
        keep: list[np.ndarray] = []
        autocast = _autocast(dev, amp)
        for rows, pixels, bad in _batches(dataset, members[0][1], batch_size, workers, dev):
            for i, why in bad:
                report.skipped[str(dataset.paths[i])] = why
            if pixels is None:
                bar.advance(len(bad))
                continue
            idx = rows.numpy()
            keep.append(idx)
            for name, (_e, loaded, writer) in list(live.items()):
                try:
                    x = loaded.normalise(pixels)
                    if dev.type == "cuda":
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.inference_mode(), autocast:
                        feats, logits = loaded.forward(x)
                    writer.write(idx, *_finite(name, idx, feats, logits, dataset))
                except Exception as exc:  # out of memory, a shape the model cannot take, ...
                    report.failures[name] = _reason(exc, batch_size=batch_size)
                    writer.abort()
                    del live[name]
                    bar.model_done()
            report.images += len(idx) * len(live)
            bar.advance(len(idx) + len(bad))
            if not live:
                return
        rows_kept = np.sort(np.concatenate(keep)) if keep else np.empty(0, np.int64)
        seconds = time.perf_counter() - t0
        for name, (e, loaded, writer) in list(live.items()):
            meta = _meta(e, loaded.preprocess, dataset, rows_kept, seconds, dev, amp, batch_size)
            try:
                report.features[name] = writer.commit(rows_kept, dataset.labels[rows_kept], meta)
                report.extracted.append(name)
            except TransferselError as exc:
                report.failures[name] = str(exc)
                writer.abort()
            del live[name]
            bar.model_done()
    finally:  # an interrupt or error: drop the partial entries, keep the published ones
        for _, _, writer in live.values():
            writer.abort()


def _finite(
    name: str, rows: np.ndarray, feats: Any, logits: Any, dataset: Dataset
) -> tuple[np.ndarray, np.ndarray | None]:
    """The batch's features (B, D) and logits (B, K) as float32 numpy; raise if any value is NaN or inf."""
    out = feats.float().cpu().numpy(), None if logits is None else logits.float().cpu().numpy()
    for what, arr in zip(("features", "logits"), out, strict=True):
        if arr is not None and not np.isfinite(arr).all():
            bad = rows[~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)]
            raise TransferselError(
                f"model {name} produced non-finite {what} (NaN or inf) for {len(bad)} image(s), first "
                f"{dataset.relpaths()[bad[0]] if len(bad) else '?'}; not cached - check its weights "
                "(or run without --amp)"
            )
    return out


def _batches(
    dataset: Dataset, pre: Preprocess, batch_size: int, workers: int, dev: Any
) -> Iterator[tuple[Any, Any, list[tuple[int, str]]]]:
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _Images(dataset.paths, pre),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    for rows, pixels, bad in loader:
        yield rows, (None if pixels is None else pixels.to(dev, non_blocking=True)), bad


def _autocast(dev: Any, amp: bool) -> Any:
    import torch

    if not amp:
        return nullcontext()
    if dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def _reason(exc: BaseException, *, batch_size: int | None = None) -> str:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return f"out of GPU memory at batch size {batch_size}; lower --batch-size"
    text = " ".join(str(exc).split())
    if isinstance(exc, TransferselError):
        return text
    return f"{type(exc).__name__}: {text[:300]}"


def _meta(
    e: ModelEntry,
    pre: Preprocess,
    dataset: Dataset,
    rows: np.ndarray,
    seconds: float,
    dev: Any,
    amp: bool,
    batch_size: int,
) -> dict[str, Any]:
    rel = dataset.relpaths()
    order = hashlib.sha256("\n".join(rel[i] for i in rows).encode()).hexdigest()
    return {
        "model": e.name,
        "source": e.source,
        "spec": e.spec,
        "model_fingerprint": e.fingerprint(),
        "weights_sha256": {str(p): _sha256(p) for p in e.weight_files()},
        "preprocess": pre.describe(),
        "dataset": dataset.name,
        "split": dataset.split,
        "dataset_root": str(dataset.root),
        "dataset_fingerprint": dataset.fingerprint,
        "classes": dataset.classes,
        "sample_order_sha256": order,
        "skipped": [rel[i] for i in sorted(set(range(len(rel))) - set(rows.tolist()))],
        "features_dtype": "float32",
        "logits_dtype": "float32",
        "seconds": round(seconds, 3),
        "device": str(dev),
        "amp": amp,
        "batch_size": batch_size,
        "versions": {
            p: _version(p)
            for p in ("transfersel", "torch", "torchvision", "timm", "open_clip_torch", "numpy")
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


class _Progress:
    """Rich progress: one bar for models, one for the images of the current group (images/s, ETA)."""

    def __init__(self, enabled: bool, n_models: int, n_images: int) -> None:
        self.enabled, self.n_models, self.n_images = enabled, n_models, n_images
        self.p: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self.p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.p.start()
            self.models = self.p.add_task("models", total=self.n_models, rate="")
            self.images = self.p.add_task("images", total=self.n_images, rate="", visible=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.p is not None:
            self.p.stop()

    def loading(self, name: str) -> None:
        if self.p is not None:
            self.p.update(self.models, description=f"models (loading {name})")

    def start_group(self, names: list[str]) -> None:
        if self.p is not None:
            label = names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"
            self.p.update(self.models, description="models")
            self.p.reset(
                self.images, total=self.n_images, description=f"images {label}", visible=True, rate=""
            )

    def advance(self, n: int) -> None:
        if self.p is not None:
            self.p.advance(self.images, n)
            speed = self.p.tasks[self.images].speed
            self.p.update(self.images, rate=f"{speed:.1f} img/s" if speed else "")

    def model_done(self) -> None:
        if self.p is not None:
            self.p.advance(self.models, 1)
