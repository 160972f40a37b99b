"""Field checks and preprocessing helpers shared by the source backends of :mod:`transfersel.zoo.sources`."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

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


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


# --- hub downloads: no network -> fail fast, one line per model -------------------------------------------

_RECHECK_S = 600.0  # a found-unreachable network is trusted this long before it is probed again
_PROBE_S = 3.0  # seconds the reachability probe may take
_NET: dict[str, Any] = {"at": -math.inf, "down": None}  # last check (monotonic s) and why it was down


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "").lower() not in ("", "0", "false", "no")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _endpoint() -> tuple[str, int]:
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _probe() -> str | None:
    """Why the hub endpoint cannot be reached (a TCP connect within :data:`_PROBE_S`), or None if it can.

    Behind a proxy (``HTTPS_PROXY``/``ALL_PROXY``) a direct connect proves nothing: the probe trusts it."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host, port = _endpoint()
    answer: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution does not honour the socket timeout
        try:
            socket.create_connection((host, port), timeout=_PROBE_S).close()
            answer.append(None)
        except OSError as exc:
            answer.append(f"cannot connect to {host}:{port}: {exc.strerror or _one_line(exc)}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(_PROBE_S)
    return answer[0] if answer else f"no answer from {host}:{port} within {_PROBE_S:.0f} s"


def _network_down() -> str | None:
    """Why the network is unreachable (probed at most every :data:`_RECHECK_S`, or a recent failure)."""
    now = time.monotonic()
    if now - _NET["at"] > _RECHECK_S:
        _NET.update(at=now, down=_probe())
    return _NET["down"]


_NETWORK_ERRORS = {  # exception class names (anywhere in the chain) that mean "no network", not "bad model"
    "ConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "TransportError",
    "NetworkError", "gaierror", "TimeoutError", "URLError", "LocalEntryNotFoundError", "OfflineModeIsEnabled",
}  # fmt: skip


def _network_cause(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s cause/context chain that says the network (or the hub cache) failed."""
    seen: set[int] = set()
    found: BaseException | None = None
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # the deepest match names the real cause
        seen.add(id(e))
        if type(e).__name__ in _NETWORK_ERRORS:
            found = e
        e = e.__cause__ or e.__context__
    text = str(exc).lower()
    if found is None and ("local cache" in text or "internet connection" in text or "offline" in text):
        found = exc
    return found


T = TypeVar("T")


def _from_hub(what: str, fix: str, build: Callable[[], T], *, uncached: bool = False) -> T:
    """``build()``, a model whose weights come from a hub, failing fast and in one line without network.

    The network is probed once (and after each failure it is trusted down for :data:`_RECHECK_S`); while it
    is down the Hugging Face client reads only its cache, without retries. ``uncached``: the weights are
    known not to be in any local cache, so no network fails at once without calling ``build``. The hub
    clients' retry and log lines are silenced. ``fix`` says how to give the weights locally.
    """
    down = "HF_HUB_OFFLINE=1 is set" if _offline_env() else None
    if down is None and (reason := _network_down()):
        down = f"the network is unreachable ({reason})"
    advice = (
        f"to run offline, {fix}, or download the weights once with network access and rerun with "
        "HF_HUB_OFFLINE=1 (the hub cache is then used)"
    )
    if down and uncached:
        raise ModelLoadError(f"{what}: weights are not in the local cache and {down}; {advice}")
    from huggingface_hub import constants

    was_offline, log_level = constants.HF_HUB_OFFLINE, logging.root.manager.disable
    root_handlers = list(logging.root.handlers)
    constants.HF_HUB_OFFLINE = was_offline or down is not None
    logging.disable(logging.CRITICAL)  # "Retrying in 8s [Retry 4/5]", open_clip's logging.error, ...
    try:
        return build()
    except Exception as exc:
        cause = _network_cause(exc)
        if cause is None:
            raise ModelLoadError(f"{what} could not be built ({_one_line(exc)})") from None
        if down is None:  # the first failure: later hub models fail fast
            _NET.update(at=time.monotonic(), down=_one_line(cause)[:100])
            down = f"the network is unreachable ({_NET['down']})"
        raise ModelLoadError(f"{what}: weights are not in the local cache and {down}; {advice}") from None
    finally:
        constants.HF_HUB_OFFLINE = was_offline
        logging.disable(log_level)
        logging.root.handlers[:] = root_handlers  # logging.error() on an unconfigured root adds a handler
