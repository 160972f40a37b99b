"""The ``open_clip`` source: the image tower of an OpenCLIP model."""

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
        if pretrained and "/" not in pretrained:  # a tag: weights from the hub (or its cache)
            model = _from_hub(
                f"open_clip model {name} ({pretrained})",
                "set 'pretrained: /path/to/open_clip_pytorch_model.bin' in the zoo entry",
                lambda: open_clip.create_model(name, pretrained=pretrained),
            )
        else:
            try:
                model = open_clip.create_model(name, pretrained=pretrained)
            except Exception as exc:
                raise ModelLoadError(
                    f"open_clip could not build {name} from {pretrained or 'random init'} ({_one_line(exc)})"
                ) from None
        visual = model.visual.eval()  # the text tower is not needed

        def forward(x: Any) -> tuple[Any, Any]:
            return visual(x), None

        return LoadedModel(visual, OpenClipSource.preprocess(spec), forward)
