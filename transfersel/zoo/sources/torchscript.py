"""The ``torchscript`` source: a local TorchScript file returning ``(features, logits)``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfersel.zoo._common import _check_common, _need, _one_line, _opt
from transfersel.zoo.registry import LoadedModel, ModelLoadError, Preprocess, ZooError, register_source


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
