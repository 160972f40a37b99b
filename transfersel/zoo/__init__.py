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

from transfersel.zoo.registry import (
    LoadedModel,
    ModelEntry,
    ModelLoadError,
    Preprocess,
    Source,
    ZooError,
    get_source,
    list_sources,
    load_zoo,
    register_source,
)

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
