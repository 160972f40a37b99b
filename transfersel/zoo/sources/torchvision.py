"""The ``torchvision`` source: torchvision's model builders with named weights or a state-dict file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from transfersel.zoo._common import _check_common, _from_hub, _need, _one_line, _opt, _overlay
from transfersel.zoo.registry import LoadedModel, ModelLoadError, Preprocess, ZooError, register_source


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
        if weights is None:
            model = models.get_model(name, weights=None)
        else:
            cached = Path(torch.hub.get_dir(), "checkpoints", Path(urlsplit(weights.url).path).name)
            model = _from_hub(
                f"torchvision model {name} ({weights})",
                f"add 'file: /path/to/{cached.name}' to the zoo entry (or put that file in {cached.parent})",
                lambda: models.get_model(name, weights=weights),
                uncached=not cached.is_file(),
            )
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
