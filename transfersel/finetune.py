"""Ground truth by fine-tuning (spec §5.3–5.4): the papers' protocol, scaled to the budget.

``full``: every weight of the model is trained with a new, zero-initialised linear head on its features —
SGD with Nesterov momentum 0.9, a cosine schedule to 0 over ``steps``, the gradient's global L2 norm clipped
at ``grad_clip``, random-resized-crop augmentation, BatchNorm in train mode (traced TorchScript graphs bake
eval-mode normalisation, so theirs keeps the pretrained statistics). Each (lr, wd) of the grid is trained on
train minus a stratified ``val_fraction`` and scored on that held-out part; the best (ties: smaller lr, then
smaller wd) is retrained on all of train, once per seed, and scored on test. ``linear``: an L2
logistic-regression probe on cached features, its regularisation chosen the same way.

Every (dataset, model, mode, stage, config) result is appended to a JSON-lines run log as soon as it
finishes (one ``write`` + ``fsync`` per line, so a line is complete or absent), and a rerun skips what the
log already holds: an interrupted run resumes where it stopped. One model that fails is reported and the
others go on.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.data import Dataset
from transfersel.errors import InputError
from transfersel.extract import decode, extract, torch_device
from transfersel.metrics import stratified_permutation
from transfersel.store import FeatureStore
from transfersel.zoo import LoadedModel, ModelEntry

__all__ = [
    "FinetuneReport",
    "Protocol",
    "RunLog",
    "finetune",
    "linear_probe_accuracy",
    "split_validation",
    "trainable_tensors",
    "write_ground_truth",
]

MODES = ("full", "linear")


@dataclass(frozen=True)
class Protocol:
    """What one fine-tuning run does. ``lrs``/``wds`` span the grid of ``full``; ``Cs`` that of ``linear``
    (inverse L2 strength, as in scikit-learn). ``wds`` are absolute SGD weight decays. ``seeds``: the final
    retrain is repeated once per seed and the test accuracies averaged."""

    mode: str = "full"
    lrs: tuple[float, ...] = (1e-2, 1e-3)
    wds: tuple[float, ...] = (0.0,)
    steps: int = 300
    final_steps: int | None = None  # None: same as steps
    batch_size: int = 32
    augment: bool = True
    val_fraction: float = 0.2
    seeds: tuple[int, ...] = (0,)
    # Without clipping, BN-free graphs (folded TFLite MobileNets, traced ResNets whose BatchNorm is baked in
    # eval mode) collapse to constant predictions at chance at lr >= 1e-3; 5 leaves stable models' runs alone.
    grad_clip: float | None = 5.0
    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise InputError(f"learning rates must be positive numbers, got {list(self.lrs)}")
        if not self.wds or any(not (wd >= 0 and math.isfinite(wd)) for wd in self.wds):
            raise InputError(f"weight decays must be numbers >= 0, got {list(self.wds)}")
        if not self.Cs or any(not (c > 0 and math.isfinite(c)) for c in self.Cs):
            raise InputError(f"linear-probe C values must be positive numbers, got {list(self.Cs)}")
        if self.steps < 1 or (self.final_steps is not None and self.final_steps < 1):
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise InputError(f"--grad-clip must be a positive number (0: no clipping), got {self.grad_clip}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if not self.seeds:
            raise InputError("at least one seed is needed for the final retrain")

    def grid(self) -> list[dict[str, float]]:
        if self.mode == "linear":
            return [{"C": c} for c in sorted(self.Cs)]
        return [{"lr": lr, "wd": wd} for lr in sorted(self.lrs) for wd in sorted(self.wds)]

    def run_config(self, hyper: dict[str, float], *, stage: str, seed: int) -> dict[str, Any]:
        """Everything that determines one run's result (the run log's key, with dataset and model)."""
        cfg: dict[str, Any] = {"mode": self.mode, "stage": stage, **hyper, "seed": seed}
        if self.mode == "full":
            cfg["steps"] = self.steps if stage == "val" else (self.final_steps or self.steps)
            cfg["batch_size"] = self.batch_size
            cfg["augment"] = self.augment
            cfg["grad_clip"] = self.grad_clip
        if stage == "val":
            cfg["val_fraction"] = self.val_fraction
        return cfg


# --- the run log ---------------------------------------------------------------------------------------


class RunLog:
    """Append-only JSON-lines record of finished runs; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.records[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(dataset: Dataset, entry: ModelEntry, config: dict[str, Any]) -> str:
        return json.dumps(
            {"dataset": dataset.fingerprint, "model": entry.fingerprint(), **config}, sort_keys=True
        )

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, key: str, record: dict[str, Any]) -> None:
        rec = {"key": key, **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(rec, sort_keys=True) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[key] = rec


# --- shared pieces ---------------------------------------------------------------------------------------


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_rows, val_rows)``: about ``fraction`` of every class (at least one sample of a
    class with two or more) is held out."""
    perm = stratified_permutation(labels, seed)
    val = []
    for c in np.unique(labels):
        rows = perm[labels[perm] == c]
        k = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        val.extend(rows[:k])
    val_rows = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val_rows), val_rows


def accuracy(pred: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    """Top-1 accuracy in %, or mean per-class accuracy when ``y``'s classes are imbalanced (spec §5.4)."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.min() == counts.max():
        return float(np.mean(pred == y) * 100), "top1"
    per_class = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(per_class) * 100), "mean_per_class"


@dataclass
class FinetuneReport:
    """Per model: test accuracy in % (mean over seeds) and the chosen configuration, or why it failed."""

    dataset: str
    mode: str
    accuracy: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    runs_done: int = 0  # runs computed by this call (the rest came from the log)
    runs_cached: int = 0


def finetune(
    zoo: Sequence[ModelEntry],
    train: Dataset,
    test: Dataset,
    *,
    protocol: Protocol | None = None,
    log: RunLog | str | Path,
    store: FeatureStore | None = None,
    device: str = "auto",
    progress: bool = True,
) -> FinetuneReport:
    """Ground-truth accuracy of every zoo model on ``test`` after tuning on ``train`` (spec §5.4).

    ``train``/``test`` must share classes. ``log`` is the run log (path or :class:`RunLog`); ``store``
    holds the features ``linear`` mode probes (extracted when missing).
    """
    protocol = protocol or Protocol()
    log = log if isinstance(log, RunLog) else RunLog(log)
    if train.classes != test.classes:
        raise InputError(
            f"train and test classes differ ({len(train.classes)} vs {len(test.classes)}); "
            "both splits must hold the same class folders"
        )
    if train.fingerprint == test.fingerprint:
        raise InputError(
            f"train and test of {train.name!r} are the same images; give a dataset with train/ and test/ "
            "folders (or two different datasets)"
        )
    report = FinetuneReport(train.name, protocol.mode)
    linear = _linear_runner(zoo, train, test, protocol, store, device) if protocol.mode == "linear" else None
    with _Progress(progress) as bar:
        for entry in zoo:
            try:
                if linear is None:
                    build = _full_runner(entry, train, test, protocol, device, bar)
                else:
                    build = linear(entry)
                acc, best = _tune(entry, train, protocol, log, build, report, bar)
                report.accuracy[entry.name], report.chosen[entry.name] = acc, best
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken model is reported; the others go on
                report.failures[entry.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return report


Runner = Callable[[dict[str, float], str, int], tuple[float, str, dict[str, Any]]]


def _tune(
    entry: ModelEntry,
    train: Dataset,
    protocol: Protocol,
    log: RunLog,
    build: Callable[[], Runner],
    report: FinetuneReport,
    bar: _Progress,
) -> tuple[float, dict[str, float]]:
    """Grid on the validation split, then the final retrain(s) on all of train, scored on test.

    ``build`` prepares the model's data (decoded images, cached features) and is called only when a run
    is not already in the log."""
    run: Runner | None = None

    def result(hyper: dict[str, float], stage: str, seed: int) -> float:
        nonlocal run
        config = protocol.run_config(hyper, stage=stage, seed=seed)
        key = RunLog.key(train, entry, config)
        if (rec := log.get(key)) is not None:
            report.runs_cached += 1
            return rec["accuracy"]
        if run is None:
            run = build()
        bar.describe(f"{entry.name} {stage} " + " ".join(f"{k}={v:g}" for k, v in hyper.items()))
        t0 = time.perf_counter()
        acc, measure, extra = run(hyper, stage, seed)
        log.append(
            key,
            {
                "dataset": train.name,
                "model": entry.name,
                **config,
                "accuracy": acc,
                "measure": measure,
                "seconds": round(time.perf_counter() - t0, 2),
                **extra,
            },
        )
        report.runs_done += 1
        return acc

    grid = protocol.grid()
    first = protocol.seeds[0]
    val = [result(h, "val", first) for h in grid]
    best = grid[int(np.argmax(val))]  # grid is sorted by lr then wd (or C): argmax keeps the smaller on ties
    test_acc = [result(best, "test", s) for s in protocol.seeds]
    return float(np.mean(test_acc)), best


# --- full fine-tuning -------------------------------------------------------------------------------------


def trainable_tensors(module: Any) -> list[Any]:
    """The tensors full fine-tuning updates: every parameter, and for TorchScript graphs converted from
    other frameworks (which keep their weights as buffers) every weight buffer, as float32 leaves.

    Quantised weights are stored as a buffer triple ``q<k>`` (integers), ``z<k>`` (zero point), ``s<k>``
    (scale), dequantised in forward as ``(q − z)·s`` (the shared zoo's TFLite conversions). Trained as they
    are, a step on ``q`` moves the weight by ``lr·s²·grad`` (frozen in effect) while the scalar scale takes a
    gradient summed over the whole kernel (unstable: such runs collapse to chance). So the triple is folded,
    ``q ← (q − z)·s``, ``z ← 0``, ``s ← 1``, and only the float weight is trained: the forward pass is
    unchanged. Normalisation statistics (``running_*``, ``moving_*``, ``num_batches_tracked``) stay fixed.
    """
    import torch

    tensors = list(module.parameters())
    if not isinstance(module, torch.jit.ScriptModule):
        return tensors
    buffers = dict(module.named_buffers())
    frozen: set[str] = set()
    for name, buf in buffers.items():
        *path, leaf = name.split(".")
        prefix = ".".join(path) + "." if path else ""
        scale, zero = f"{prefix}s{leaf[1:]}", f"{prefix}z{leaf[1:]}"
        if leaf.startswith("q") and not buf.is_floating_point() and scale in buffers and zero in buffers:
            weight = (buf.to(torch.float32) - buffers[zero]) * buffers[scale]
            _set_buffer(module, name, weight)
            _set_buffer(module, scale, torch.ones_like(buffers[scale]))
            _set_buffer(module, zero, torch.zeros_like(buffers[zero]))
            frozen.update((scale, zero))
    for name, buf in dict(module.named_buffers()).items():
        leaf = name.rsplit(".", 1)[-1]
        if name in frozen or any(s in leaf for s in ("running_", "moving_", "num_batches_tracked")):
            continue
        if not (buf.is_floating_point() or buf.dtype in (torch.uint8, torch.int8)):
            continue
        weight = buf.detach().to(torch.float32).clone().requires_grad_(True)
        _set_buffer(module, name, weight)
        tensors.append(weight)
    return tensors


def _set_buffer(module: Any, name: str, value: Any) -> None:
    *path, leaf = name.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, leaf, value)


def _decode_all(dataset: Dataset, entry: ModelEntry) -> Any:
    """Every image of ``dataset`` as one uint8 tensor (N, C, H, W) in the model's geometry."""
    import torch

    pre = entry.preprocess()
    return torch.stack([decode(p, pre) for p in dataset.paths])


def _full_runner(
    entry: ModelEntry, train: Dataset, test: Dataset, protocol: Protocol, device: str, bar: _Progress
) -> Callable[[], Runner]:
    def build() -> Runner:
        import torch

        dev = torch_device(device)
        images, y = _decode_all(train, entry), torch.as_tensor(train.labels)
        test_images, test_y = _decode_all(test, entry), test.labels
        n_classes = len(train.classes)

        def run(hyper: dict[str, float], stage: str, seed: int) -> tuple[float, str, dict[str, Any]]:
            if stage == "val":
                fit_rows, eval_rows = split_validation(train.labels, protocol.val_fraction, seed)
                x_fit, y_fit = images[fit_rows], y[fit_rows]
                x_eval, y_eval = images[eval_rows], train.labels[eval_rows]
                steps = protocol.steps
            else:
                x_fit, y_fit, x_eval, y_eval = images, y, test_images, test_y
                steps = protocol.final_steps or protocol.steps
            torch.manual_seed(seed)
            loaded = entry.load()
            head, diverged = _train(
                loaded, x_fit, y_fit, n_classes, hyper["lr"], hyper["wd"], steps, protocol, seed, dev, bar
            )
            pred = _predict(loaded, head, x_eval, dev)
            acc, measure = accuracy(pred, y_eval)
            return acc, measure, {"diverged": diverged}

        return run

    return build


def _train(
    loaded: LoadedModel,
    x: Any,
    y: Any,
    n_classes: int,
    lr: float,
    wd: float,
    steps: int,
    protocol: Protocol,
    seed: int,
    dev: Any,
    bar: _Progress,
) -> tuple[Any, bool]:
    """``steps`` of SGD (Nesterov, cosine to 0, clipped) on all weights plus a new head; returns
    (head, diverged)."""
    import torch

    module = loaded.module.to(dev)
    params = trainable_tensors(module)  # after the move, so converted buffers stay leaves on ``dev``
    with torch.no_grad():
        dim = loaded.forward(loaded.normalise(x[:2].to(dev)))[0].shape[1]
    head = torch.nn.Linear(dim, n_classes).to(dev)
    # A zero head (as BiT's transfer recipe) sends no gradient into the backbone until it has learnt
    # something: a random head's first large steps otherwise wreck BN-free pretrained features.
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    params += list(head.parameters())
    opt = torch.optim.SGD(
        params,
        lr=lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=wd,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    batch = min(protocol.batch_size, len(x))
    order, pos = torch.randperm(len(x), generator=gen), 0
    module.train()
    head.train()
    bar.start(steps)
    diverged = False
    for _ in range(steps):
        if pos + batch > len(order):  # a new epoch: reshuffle, drop the ragged tail
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        pixels = x[idx]
        if protocol.augment:
            pixels = _random_resized_crop(pixels, gen)
        feats, _ = loaded.forward(loaded.normalise(pixels.to(dev)))
        loss = torch.nn.functional.cross_entropy(head(feats), y[idx].to(dev))
        if not torch.isfinite(loss):
            diverged = True  # scored as it stands (about chance): a too-large lr loses the grid
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if protocol.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, protocol.grad_clip)
        opt.step()
        schedule.step()
        bar.advance()
    module.eval()
    head.eval()
    return head, diverged


def _random_resized_crop(pixels: Any, gen: Any) -> Any:
    """Per image: a random crop of 50–100 % of the area, aspect 3/4–4/3, resized back (no flip: digits and
    letters change meaning when mirrored)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    n, _, h, w = pixels.shape
    out = torch.empty_like(pixels)
    u = torch.rand(n, 2, generator=gen)
    off = torch.rand(n, 2, generator=gen)
    for i in range(n):
        area = h * w * (0.5 + 0.5 * float(u[i, 0]))
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(u[i, 1]))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        top, left = int(off[i, 0] * (h - ch + 1)), int(off[i, 1] * (w - cw + 1))
        out[i] = F.resized_crop(pixels[i], top, left, ch, cw, [h, w], antialias=True)
    return out


def _predict(loaded: LoadedModel, head: Any, x: Any, dev: Any, batch: int = 256) -> np.ndarray:
    import torch

    preds = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            feats, _ = loaded.forward(loaded.normalise(x[i : i + batch].to(dev)))
            preds.append(head(feats).argmax(dim=1).cpu().numpy())
    return np.concatenate(preds)


# --- linear probe -----------------------------------------------------------------------------------------


def linear_probe_accuracy(
    fit_features: np.ndarray,
    fit_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    C: float,
) -> tuple[float, str]:
    """Accuracy (%) on the eval set of an L2 logistic regression (``C`` as in scikit-learn, bias free)
    fitted on standardised fit features (mean/sd of the fit set)."""
    from transfersel.metrics.linear import fit_logistic

    X = np.asarray(fit_features, dtype=np.float64)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    W, b = fit_logistic((X - mu) / sd, fit_labels, int(max(fit_labels.max(), eval_labels.max())) + 1, C)
    pred = (((np.asarray(eval_features, dtype=np.float64) - mu) / sd) @ W + b).argmax(axis=1)
    return accuracy(pred, eval_labels)


def _linear_runner(
    zoo: Sequence[ModelEntry],
    train: Dataset,
    test: Dataset,
    protocol: Protocol,
    store: FeatureStore | None,
    device: str,
) -> Callable[[ModelEntry], Callable[[], Runner]]:
    """Features of every model on both splits come from the cache (extracted once, for the whole zoo)."""
    store = store if store is not None else FeatureStore()
    cached: dict[str, Any] = {}

    def features() -> dict[str, Any]:
        if not cached:
            for split, ds in (("train", train), ("test", test)):
                rep = extract(list(zoo), ds, store=store, device=device, progress=False)
                cached[split] = rep
        return cached

    def for_entry(entry: ModelEntry) -> Callable[[], Runner]:
        def run(hyper: dict[str, float], stage: str, seed: int) -> tuple[float, str, dict[str, Any]]:
            reps = features()
            for split in ("train", "test"):
                if entry.name not in reps[split].features:
                    why = reps[split].failures.get(entry.name, "not extracted")
                    raise RuntimeError(f"no {split} features: {why}")
            tr, te = reps["train"].features[entry.name], reps["test"].features[entry.name]
            Xtr, ytr = np.asarray(tr.features), np.asarray(tr.labels)
            if stage == "val":
                fit, ev = split_validation(ytr, protocol.val_fraction, seed)
                acc, measure = linear_probe_accuracy(Xtr[fit], ytr[fit], Xtr[ev], ytr[ev], C=hyper["C"])
            else:
                acc, measure = linear_probe_accuracy(
                    Xtr, ytr, np.asarray(te.features), np.asarray(te.labels), C=hyper["C"]
                )
            return acc, measure, {}

        return lambda: run

    return for_entry


# --- output ------------------------------------------------------------------------------------------------


def write_ground_truth(reports: Sequence[FinetuneReport], path: str | Path, *, comment: str = "") -> Path:
    """Write the ``dataset,model,accuracy`` CSV (accuracy in %) that ``rank --ground-truth`` reads, merging
    with rows already in ``path`` for other (dataset, model) pairs. Written to a temporary file, renamed."""
    path = Path(path)
    rows: dict[tuple[str, str], float] = {}
    if path.is_file():
        from transfersel.agreement import read_ground_truth

        for ds, models in read_ground_truth(path).accuracy.items():
            for m, a in models.items():
                rows[(ds, m)] = a
    for rep in reports:
        for m, a in rep.accuracy.items():
            rows[(rep.dataset, m)] = a
    lines = [f"# {line}" for line in comment.splitlines() if line.strip()]
    lines.append("dataset,model,accuracy")
    lines += [f"{ds},{m},{a:.2f}" for (ds, m), a in rows.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def protocol_summary(protocol: Protocol) -> str:
    """One line per setting of the protocol's mode, for the CSV header and the benchmark's RESULTS."""
    linear_only = {"Cs"}
    full_only = {"lrs", "wds", "steps", "final_steps", "batch_size", "augment", "grad_clip"}
    skip = full_only if protocol.mode == "linear" else linear_only
    return "\n".join(f"{k}: {v}" for k, v in asdict(protocol).items() if k not in skip)


class _Progress:
    """A rich progress bar over the steps of the current run (no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("fine-tuning", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def start(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total, completed=0)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)
