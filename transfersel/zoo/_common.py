"""Field checks and preprocessing helpers shared by the source backends of :mod:`transfersel.zoo.sources`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from transfersel.zoo.registry import ModelLoadError, Preprocess, ZooError


def _need(spec: dict, key: str, kind: type | tuple[type, ...], err: Callable[[str], ZooError]) -> Any:
    if key not in spec:
        raise err(f"field {key!r} is missing")
    return _opt(spec, key, kind, err)


def _opt(spec: dict, key: str, kind: type | tuple[type, ...], err: Callable[[str], ZooError]) -> Any:
    v = spec.get(key)
    if v is not None and (not isinstance(v, kind) or isinstance(v, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise err(f"field {key!r} must be {names}, got {v!r}")
    return v


def _numbers(
    spec: dict,
    key: str,
    n: int | None,
    err: Callable[[str], ZooError],
    *,
    positive: bool,
    integer: bool = False,
) -> None:
    v = spec.get(key)
    if v is None:
        return
    kind = int if integer else int | float
    ok = isinstance(v, list) and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)
    ok = ok and (n is None or len(v) == n) and (not positive or all(x > 0 for x in v))
    if not ok:
        what = f"{n or 'some'} {'positive ' if positive else ''}{'integers' if integer else 'numbers'}"
        raise err(f"field {key!r} must be a list of {what}, got {_one_line(repr(v))}")


def _check_common(spec: dict, err: Callable[[str], ZooError], *, channels: int | None = None) -> None:
    """Optional preprocessing overrides shared by the sources."""
    _numbers(spec, "input_size", 2, err, positive=True, integer=True)
    if spec.get("input_size") and max(spec["input_size"]) > _MAX_SIDE:
        raise err(f"field 'input_size' must be at most {_MAX_SIDE} pixels a side, got {spec['input_size']}")
    c = channels or 3
    _numbers(spec, "mean", c, err, positive=False)
    _numbers(spec, "std", c, err, positive=True)
    interp = _opt(spec, "interpolation", str, err)
    if interp is not None and interp not in _INTERPOLATIONS:
        raise err(f"field 'interpolation' must be one of {', '.join(_INTERPOLATIONS)}, got {interp!r}")
    crop = _opt(spec, "crop_pct", (int, float), err)
    if crop is not None and not 0 < crop <= 1:
        raise err(f"field 'crop_pct' must be in (0, 1], got {crop}")


_MAX_SIDE = 8192  # pixels; larger inputs are a typo, and would exhaust memory on the first batch
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _center_preprocess(
    size: tuple[int, int],
    crop_pct: float,
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
) -> Preprocess:
    """timm/torchvision eval geometry: resize to ``size / crop_pct`` (shorter side if square), centre crop."""
    scale = tuple(math.floor(s / crop_pct) for s in size)
    resize: int | tuple[int, int] = scale[0] if scale[0] == scale[1] else scale  # type: ignore[assignment]
    return Preprocess(tuple(size), resize, interpolation, channels, tuple(mean), tuple(std))  # type: ignore[arg-type]


def _overlay(spec: dict, pre: Preprocess) -> Preprocess:
    """Entry fields ``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std`` override defaults."""
    if not any(k in spec for k in ("input_size", "crop_pct", "interpolation", "mean", "std")):
        return pre
    size = tuple(spec.get("input_size") or pre.size)
    crop = spec.get("crop_pct")
    if crop is None:  # keep the source's ratio
        r = pre.resize if isinstance(pre.resize, int) else pre.resize[0]
        crop = pre.size[0] / r
    return _center_preprocess(
        size,
        crop,
        spec.get("interpolation") or pre.interpolation,  # type: ignore[arg-type]
        spec.get("mean") or pre.mean,
        spec.get("std") or pre.std,
        pre.channels,
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def _hub_error(what: str, exc: BaseException) -> ModelLoadError:
    if _offline() or "offline" in str(exc).lower() or isinstance(exc, OSError | ConnectionError):
        return ModelLoadError(
            f"{what}: weights are not available offline; download them once with network access, or add "
            f"'file: /path/to/weights.pth' to the zoo entry ({_one_line(exc)[:120]})"
        )
    return ModelLoadError(f"{what} could not be built ({_one_line(exc)})")
