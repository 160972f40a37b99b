"""``transfersel cache ls | info | rm``: inspect and clean the feature cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from transfersel.cli.app import app, say, show_tables, user_errors
from transfersel.report import Table

cache_app = typer.Typer(
    help="Inspect and clean the feature cache.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[
    Path | None, typer.Option("--cache-dir", "--cache", help="feature cache folder (default: user cache)")
]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="dataset name")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="dataset split (train, test, ...)")]


def _record(e: Any) -> dict[str, Any]:
    """One entry as shown: the subsample is the dataset's fingerprint (it changes with --max-per-class and
    --seed) with its size N."""
    return {
        "dataset": e.meta["dataset"],
        "split": e.meta["split"],
        "subsample": str(e.meta.get("dataset_fingerprint", ""))[:12],
        "model": e.model,
        "n": e.meta["n"],
        "d": e.meta["d"],
        "logits": None if e.logits is None else int(e.logits.shape[1]),
        "bytes": e.nbytes,
        "created": str(e.meta.get("created", "")),
        "path": str(e.path),
    }


@cache_app.command("ls")
@user_errors
def cache_ls_cmd(
    cache_dir: CacheDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the cached (dataset, subsample, model) entries."""
    from transfersel.store import FeatureStore

    store = FeatureStore(cache_dir)
    records = [_record(e) for e in store.entries()]
    if as_json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return
    columns = ("dataset", "split", "subsample", "model", "N", "D", "logits", "MB", "created")
    rows = tuple(
        (
            r["dataset"],
            str(r["split"]),
            r["subsample"],
            r["model"],
            r["n"],
            r["d"],
            "-" if r["logits"] is None else r["logits"],
            round(r["bytes"] / 1e6, 1),
            r["created"],
        )
        for r in records
    )
    show_tables(Table(columns, rows, str(store.root)))


def _matching(store: Any, model: str | None, dataset: str | None, split: str | None) -> list[Any]:
    return [
        e
        for e in store.entries()
        if model in (None, e.model)
        and dataset in (None, e.meta["dataset"])
        and split in (None, e.meta["split"])
    ]


@cache_app.command("info")
@user_errors
def cache_info_cmd(
    model: Annotated[str, typer.Argument(help="model name")],
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Print the meta.json of the matching cache entries as one JSON list."""
    from transfersel.errors import InputError
    from transfersel.store import FeatureStore

    store = FeatureStore(cache_dir)
    hits = _matching(store, model, dataset, split)
    if not hits:
        raise InputError(f"no cache entry for model {model!r} in {store.root}; see `transfersel cache ls`")
    doc = [{"path": str(e.path), **e.meta} for e in hits]
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


@cache_app.command("rm")
@user_errors
def cache_rm_cmd(
    model: Annotated[str | None, typer.Option("--model", help="remove this model's entries")] = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="remove every entry")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list what would be removed; remove nothing")
    ] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Remove cache entries by model, dataset and/or split name (or --all)."""
    from transfersel.errors import InputError
    from transfersel.store import FeatureStore

    store = FeatureStore(cache_dir)
    if not all_ and model is None and dataset is None and split is None:
        raise InputError("say what to remove: --model NAME, --dataset NAME and/or --split NAME, or --all")
    entries = store.entries() if all_ else _matching(store, model, dataset, split)
    for e in entries:
        if not dry_run:
            store.remove(e)
        say(f"{'would remove' if dry_run else 'removed'} {e.path}")
    n = len(entries)
    say(f"{n} entr{'y' if n == 1 else 'ies'} {'would be removed (dry run)' if dry_run else 'removed'}")
