"""The ``timm`` source: hub or local weights through timm's pretrained-config mechanism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfersel.zoo._common import (
    _center_preprocess,
    _check_common,
    _from_hub,
    _need,
    _one_line,
    _opt,
    _overlay,
)
from transfersel.zoo.registry import LoadedModel, ModelLoadError, Preprocess, ZooError, register_source


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
        pretrained = spec.get("pretrained", True)
        if file:
            try:
                model = timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay={"file": file})
            except Exception as exc:
                raise ModelLoadError(f"timm could not load {name} from {file} ({_one_line(exc)})") from None
        elif pretrained:
            model = _from_hub(
                f"timm model {name}",
                "add 'file: /path/to/weights.pth' to the zoo entry",
                lambda: timm.create_model(name, pretrained=True),
            )
        else:
            model = timm.create_model(name, pretrained=False)
        model.eval()

        def forward(x: Any) -> tuple[Any, Any]:
            fmap = model.forward_features(x)
            return model.forward_head(fmap, pre_logits=True), model.forward_head(fmap)

        return LoadedModel(model, TimmSource.preprocess(spec), forward)
