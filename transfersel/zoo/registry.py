"""The zoo registry core: entries, preprocessing, source backends and :func:`load_zoo`.

Backends live in :mod:`transfersel.zoo.sources`, one module per source, each registering itself with
:func:`register_source`; they are imported on first use, the way :mod:`transfersel.metrics` loads metrics.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transfersel.digests import file_digest
from transfersel.errors import InputError, TransferselError
from transfersel.paths import read_text

__all__ = [
    "LoadedModel",
    "ModelEntry",
    "ModelLoadError",
    "Preprocess",
    "Source",
    "ZooError",
    "get_source",
    "list_sources",
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
        """Hash of what determines the features: source fields, and the content of local weight files (so a
        copied or re-laid zoo keeps its cache entries, and a replaced weight file re-extracts)."""
        keys = {"source": self.source}
        for k in self.backend.fields:
            v = self.spec.get(k)
            if isinstance(v, str) and k in self.backend.path_fields and Path(v).exists():
                v = ["content", file_digest(Path(v))]
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
_LOADED = False


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


def _load() -> None:
    """Import every backend module of :mod:`transfersel.zoo.sources` once (their decorators register them)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from transfersel.zoo import sources

    for mod in pkgutil.iter_modules(sources.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{sources.__name__}.{mod.name}")


def get_source(name: str) -> Source:
    """The registered backend ``name``; raises :class:`ZooError` listing the known ones."""
    _load()
    if name not in _SOURCES:
        raise ZooError(f"unknown model source {name!r}; use one of {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def load_zoo(path: str | Path, *, only: Sequence[str] | None = None) -> list[ModelEntry]:
    """Read and validate a zoo YAML file; ``only`` keeps the named entries (in zoo order)."""
    _load()
    path = Path(path)
    try:
        text = read_text(path, "zoo", "a YAML list of model entries")
    except InputError as exc:
        raise ZooError(str(exc)) from None
    try:
        doc = yaml.safe_load(text)
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
    _check_name(raw.get("name"), where)
    name = raw["name"]
    where = f"{zoo_path.name} entry {name!r}"
    _check_size(raw, where)
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


MAX_NAME = 200  # characters; the name becomes a cache folder and a file-name part
MAX_ENTRY_SIZE = 1_000_000  # characters + items of one entry, YAML aliases expanded (meta.json holds it)


def _check_name(name: Any, where: str) -> None:
    """A model name is a cache folder and a table key: a short, printable, single path component."""
    rule = f"use at most {MAX_NAME} printable characters, without '/', '\\' or a leading '.'"
    if not isinstance(name, str) or not name.strip():
        raise ZooError(f"{where}: field 'name' must be a non-empty string; {rule}")
    shown = repr(name[:40] + ("..." if len(name) > 40 else ""))
    if len(name) > MAX_NAME:
        raise ZooError(f"{where}: model name {shown} is {len(name)} characters long; {rule}")
    if any(not c.isprintable() for c in name):
        raise ZooError(f"{where}: model name {shown} holds a control character (NUL, newline, ...); {rule}")
    if "/" in name or "\\" in name or name.startswith("."):
        raise ZooError(f"{where}: model name {shown} is not a single path component; {rule}")


def _check_size(raw: dict, where: str) -> None:
    """Refuse an entry whose fields, YAML aliases expanded, exceed :data:`MAX_ENTRY_SIZE` (an alias bomb)."""
    budget = MAX_ENTRY_SIZE
    for key, value in raw.items():
        stack = [key, value]
        while stack:  # iterative: a recursive alias must not hit the recursion limit
            v = stack.pop()
            budget -= 1 + (len(v) if isinstance(v, str | bytes) else 0)
            if budget < 0:
                raise ZooError(
                    f"{where}: its fields expand to more than {MAX_ENTRY_SIZE:,} characters with YAML "
                    f"aliases resolved (at field {repr(key)[:60]}: an alias bomb or a recursive alias?); "
                    "write the values out, shorter"
                )
            if isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, list | tuple | set):
                stack.extend(v)


def _looks_like_path(v: str) -> bool:
    return "/" in v or v.startswith("~") or Path(v).suffix in (".pt", ".pth", ".bin", ".safetensors", ".json")


def list_sources() -> list[str]:
    """Names of the registered source backends, sorted."""
    _load()
    return sorted(_SOURCES)
