"""Full fine-tuning of one model: every weight trained with a new, zero-initialised linear head (spec §5.4).

SGD with Nesterov momentum 0.9, a cosine schedule to 0, the gradient's global L2 norm clipped, random-resized
crop augmentation, BatchNorm in train mode. :func:`full_runner` returns the
:data:`~transfersel.protocol.Runner` that :func:`transfersel.finetune.finetune` calls per run: cross-entropy
on the class labels, scored by accuracy; :func:`regression_runner` the same with a head of R outputs trained
by mean squared error on standardised regression targets, scored by the mean test R².
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from transfersel.data import Dataset
from transfersel.extract import decode, torch_device
from transfersel.metrics._regression import r2_per_target
from transfersel.probe import accuracy, split_validation
from transfersel.progress import StepProgress
from transfersel.protocol import Protocol, Runner
from transfersel.regression import RegressionTargets
from transfersel.zoo import LoadedModel, ModelEntry

__all__ = ["full_runner", "regression_runner", "trainable_tensors"]


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


def full_runner(
    entry: ModelEntry, train: Dataset, test: Dataset, protocol: Protocol, device: str, bar: StepProgress
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
                loaded, x_fit, y_fit, n_classes, hyper["lr"], hyper["wd"], steps, protocol, seed, dev, bar,
                loss_fn=torch.nn.functional.cross_entropy,
            )  # fmt: skip
            pred = _outputs(loaded, head, x_eval, dev).argmax(axis=1)
            acc, measure = accuracy(pred, y_eval)
            return acc, measure, {"diverged": diverged}

        return run

    return build


def regression_runner(
    targets: RegressionTargets,
) -> Callable[[ModelEntry, Dataset, Dataset, Protocol, str, StepProgress], Callable[[], Runner]]:
    """:func:`full_runner` for regression: the head has one output per target, trained by MSE on the
    targets standardised with the fitted rows' mean and sd; a run scores the mean over targets of R² on the
    held-out rows (val) or on test, and logs each target's R². ``protocol.augment`` must be off (the caller
    checks): a random-resized crop rescales the image, so it would change a scale target without changing the
    label."""

    def runner(
        entry: ModelEntry, train: Dataset, test: Dataset, protocol: Protocol, device: str, bar: StepProgress
    ) -> Callable[[], Runner]:
        def build() -> Runner:
            import torch

            dev = torch_device(device)
            images, test_images = _decode_all(train, entry), _decode_all(test, entry)

            def run(hyper: dict[str, float], stage: str, seed: int) -> tuple[float, str, dict[str, Any]]:
                if stage == "val":
                    fit_rows, eval_rows = split_validation(train.labels, protocol.val_fraction, seed)
                    x_fit, t_fit = images[fit_rows], targets.train[fit_rows]
                    x_eval, t_eval = images[eval_rows], targets.train[eval_rows]
                    steps = protocol.steps
                else:
                    x_fit, t_fit, x_eval, t_eval = images, targets.train, test_images, targets.test
                    steps = protocol.final_steps or protocol.steps
                mean, sd = t_fit.mean(axis=0), t_fit.std(axis=0)
                y_fit = torch.as_tensor((t_fit - mean) / sd, dtype=torch.float32)
                torch.manual_seed(seed)
                loaded = entry.load()
                head, diverged = _train(
                    loaded, x_fit, y_fit, len(targets.names), hyper["lr"], hyper["wd"], steps, protocol, seed,
                    dev, bar, loss_fn=torch.nn.functional.mse_loss,
                )  # fmt: skip
                pred = _outputs(loaded, head, x_eval, dev)
                # a diverged run's non-finite outputs are scored as predicting the mean (R² about 0)
                pred = np.where(np.isfinite(pred), pred, 0.0)
                r2 = r2_per_target(pred, (t_eval - mean) / sd)  # R² is unchanged by the standardisation
                per_target = {n: round(float(v), 6) for n, v in zip(targets.names, r2, strict=True)}
                return float(r2.mean()), "r2", {"diverged": diverged, "r2_per_target": per_target}

            return run

        return build

    return runner


def _train(
    loaded: LoadedModel,
    x: Any,
    y: Any,
    n_outputs: int,
    lr: float,
    wd: float,
    steps: int,
    protocol: Protocol,
    seed: int,
    dev: Any,
    bar: StepProgress,
    *,
    loss_fn: Callable[[Any, Any], Any],
) -> tuple[Any, bool]:
    """``steps`` of SGD (Nesterov, cosine to 0, clipped) on all weights plus a new head of ``n_outputs``,
    minimising ``loss_fn(head outputs, y rows)``; returns (head, diverged)."""
    import torch

    module = loaded.module.to(dev)
    params = trainable_tensors(module)  # after the move, so converted buffers stay leaves on ``dev``
    with torch.no_grad():
        dim = loaded.forward(loaded.normalise(x[:2].to(dev)))[0].shape[1]
    head = torch.nn.Linear(dim, n_outputs).to(dev)
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
        loss = loss_fn(head(feats), y[idx].to(dev))
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


def _outputs(loaded: LoadedModel, head: Any, x: Any, dev: Any, batch: int = 256) -> np.ndarray:
    """The head's outputs (N, n_outputs) on every image of ``x``."""
    import torch

    preds = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            feats, _ = loaded.forward(loaded.normalise(x[i : i + batch].to(dev)))
            preds.append(head(feats).float().cpu().numpy())
    return np.concatenate(preds)
