"""Model zoos: a YAML list of model entries, each built by a registered *source* backend.

A zoo file is a top-level list (or a mapping with a ``models:`` list) of entries::

    - name: resnet50            # unique; the cache and every table use it
      source: timm              # torchscript | timm | torchvision | open_clip | efficientnet_lite
      model: resnet50.tv_in1k   # source-specific fields ...

Names are at most 200 printable characters, without ``/``, ``\\`` or a leading ``.``. Unknown descriptive keys
(``provenance``, ``sanity_accuracy``, ``labels`` ...) are kept and ignored; an entry may expand, YAML aliases
resolved, to at most 1,000,000 characters (a larger one is refused as an alias bomb). Relative
paths resolve against the zoo file's own folder. :func:`load_zoo` validates every entry (naming the entry and
the field when something is wrong) without loading any weights; a source's ``load`` builds a
:class:`LoadedModel` whose ``forward(x)`` returns ``(features, logits | None)`` for normalised input ``x``.
Without network (probed once; or after the first failure; or with ``HF_HUB_OFFLINE=1``) a hub model whose
weights are not cached fails at once with one line saying how to run offline.

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
