"""The Typer app, its consoles, error handling and the option vocabulary every command shares.

The shared options mean the same in every command that takes them:

``--models`` zoo YAML, ``--model`` one zoo entry (repeatable), ``--data`` dataset, ``--split``,
``--max-per-class``, ``--seed``, ``--cache-dir``, ``--device``, ``--metric/-m`` (repeatable, ``knn:k=5``),
``--reduce`` (auto, none or d; default from ``transfersel/selection.json``); ``--executor local|ray``
with ``--ray-address``, ``--jobs``, ``--threads-per-job`` (where the units of work run).
Old spellings (``--only``, ``--cache``) still work, hidden from the help.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from transfersel.errors import TransferselError

__all__ = [
    "DataOptions",
    "app",
    "console",
    "data_options",
    "err_console",
    "executor_options",
    "exit_if_partial",
    "target_options",
    "user_errors",
]


def _version(value: bool) -> None:
    if value:
        from transfersel import __version__

        typer.echo(f"transfersel {__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="Rank pretrained models by how well they will fine-tune on your data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text renders literally: [demo], open_clip:M:P
)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Rank pretrained models by how well they will fine-tune on your data."""


console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error = one line, never wrapped


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into a one-line message and exit code 2; show warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, *_a, **_k):
            err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)

        old = warnings.showwarning
        warnings.showwarning = show
        try:
            return fn(*args, **kwargs)
        except TransferselError as exc:
            # escaped: a fix such as "pip install 'transfersel[demo]'" is not rich markup
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is kept; rerun the command to resume")
            raise typer.Exit(130) from None
        finally:
            warnings.showwarning = old

    return wrapper


def exit_if_partial(refused: tuple[str, ...], failures: Mapping[str, str]) -> None:
    """Exit 1 after the tables when a metric asked for by name could not run, or some models got NaN
    because their input or a metric failed (the notes say why); one line each."""
    if refused:
        names = ", ".join(dict.fromkeys(why.split()[0] for why in refused))
        say(f"not ranked: {names} (asked for, but could not run; see the notes above)")
    if failures:
        n = len(failures)
        say(f"partial failure: {n} model(s) got NaN, ranked last: {', '.join(failures)} (see the notes)")
    if refused or failures:
        raise typer.Exit(1)


def exit_if_failed(failures: Mapping[str, str]) -> None:
    """One ``failed: model: why`` line per model that could not be processed, then exit 1 if any failed
    (the others' results are already written)."""
    for name, why in failures.items():
        say(f"failed: {name}: {why}")
    if failures:
        raise typer.Exit(1)


def say(line: str) -> None:
    """One plain line on stderr (no markup, no highlighting)."""
    err_console.print(line, markup=False, highlight=False)


def show_tables(*tables: Any) -> None:
    """Render :class:`transfersel.report.Table` results on stdout (the CLI renders only through report)."""
    from transfersel.report import show

    for table in tables:
        show(table, console)


def wrote(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            say(f"wrote {p}")


# --- the shared option vocabulary -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataOptions:
    """The shared extraction options of a command: which zoo entries, which samples, where, on what device."""

    models: Path | None
    model: tuple[str, ...]
    split: str
    max_per_class: int | None
    seed: int
    cache_dir: Path | None
    device: str

    def rank_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`transfersel.rank.rank` and friends."""
        return {
            "models": self.models,
            "only": list(self.model) or None,
            "split": self.split,
            "max_per_class": self.max_per_class,
            "seed": self.seed,
            "cache": self.cache_dir,
            "device": self.device,
        }


ModelsHelp = "zoo YAML (features come from the cache; missing ones are extracted)"
_SHARED: list[tuple[str, Any, Any]] = [
    (
        "model",
        Annotated[list[str] | None, typer.Option("--model", help="only this zoo entry (repeatable)")],
        None,
    ),
    ("only", Annotated[list[str] | None, typer.Option("--only", hidden=True)], None),
    ("split", Annotated[str, typer.Option("--split", help="dataset split (train, test, ...)")], "train"),
    (
        "max_per_class",
        Annotated[int | None, typer.Option("--max-per-class", help="cap images per class (seeded)")],
        None,
    ),
    ("seed", Annotated[int, typer.Option("--seed", help="seed of the per-class subsample")], 0),
    (
        "cache_dir",
        Annotated[
            Path | None, typer.Option("--cache-dir", help="feature cache folder (default: user cache)")
        ],
        None,
    ),
    ("cache", Annotated[Path | None, typer.Option("--cache", hidden=True)], None),
    (
        "device",
        Annotated[str, typer.Option("--device", help="auto (CUDA if visible), cpu, cuda[:N], mps")],
        "auto",
    ),
]


def data_options(*, models_required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the shared data options to a command; the command receives them as ``opts: DataOptions``."""
    kind = inspect.Parameter.KEYWORD_ONLY
    models_ann = Annotated[Path | None, typer.Option("--models", help=ModelsHelp)]
    models = inspect.Parameter(
        "models", kind, annotation=models_ann, default=inspect.Parameter.empty if models_required else None
    )
    extra = [models] + [inspect.Parameter(n, kind, annotation=a, default=d) for n, a, d in _SHARED]

    def pack(s: dict[str, Any]) -> dict[str, Any]:
        return {
            "opts": DataOptions(
                models=s["models"],
                model=tuple([*(s["model"] or ()), *(s["only"] or ())]),
                split=s["split"],
                max_per_class=s["max_per_class"],
                seed=s["seed"],
                cache_dir=s["cache_dir"] or s["cache"],
                device=s["device"],
            )
        }

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _strip_and_inject(fn, "opts", extra, pack)

    return deco


def _strip_and_inject(
    fn: Callable[..., Any],
    consumed: str,
    extra: list[inspect.Parameter],
    pack: Callable[[dict[str, Any]], dict[str, Any]],
) -> Callable[..., Any]:
    """Replace ``fn``'s parameter ``consumed`` by the CLI options ``extra``, packed by ``pack``."""
    sig = inspect.signature(fn, eval_str=True)
    names = {p.name for p in extra}

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        shared = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return fn(**kwargs, **pack(shared))

    params = [p for p in sig.parameters.values() if p.name != consumed]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    wrapper.__signature__ = sig.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
    return wrapper


_EXECUTOR: list[tuple[str, Any, Any]] = [
    (
        "ray_address",
        Annotated[
            str | None,
            typer.Option(
                "--ray-address", help="Ray cluster to join (auto, HOST:6379); default: start one here"
            ),
        ],
        None,
    ),
    (
        "jobs",
        Annotated[
            int | None, typer.Option("--jobs", help="ray: tasks in flight (default: cluster capacity)")
        ],
        None,
    ),
    (
        "threads_per_job",
        Annotated[
            int | None, typer.Option("--threads-per-job", help="ray: torch threads per task (default 1)")
        ],
        None,
    ),
]


EXECUTOR_HELP = "local: in this process; ray: one Ray task per unit of work"


def executor_options(what: str = EXECUTOR_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --executor (help: ``what``), --ray-address, --jobs, --threads-per-job; the command gets
    ``executor: Executor``."""
    kind = inspect.Parameter.KEYWORD_ONLY
    choice = Annotated[str, typer.Option("--executor", help=what)]
    extra = [inspect.Parameter("executor", kind, annotation=choice, default="local")]
    extra += [inspect.Parameter(n, kind, annotation=a, default=d) for n, a, d in _EXECUTOR]

    def pack(s: dict[str, Any]) -> dict[str, Any]:
        from transfersel.executor import Executor

        return {
            "executor": Executor(
                s["executor"], address=s["ray_address"], jobs=s["jobs"], threads_per_job=s["threads_per_job"]
            )
        }

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _strip_and_inject(fn, "executor", extra, pack)

    return deco


DEFAULT_TEMPLATE = "a photo of a {}."
_TARGETS: list[tuple[str, Any, Any]] = [
    (
        "embedder",
        Annotated[
            list[str] | None,
            typer.Option(
                "--embedder",
                help="label embedder for emms (repeatable: K channels): minilm, open_clip:M:P, hf:PATH",
            ),
        ],
        None,
    ),
    (
        "template",
        Annotated[str, typer.Option("--template", help="prompt for class names; '{}' = the bare name")],
        DEFAULT_TEMPLATE,
    ),
    ("classes", Annotated[Path | None, typer.Option("--classes", help="class names, one per line")], None),
    (
        "targets",
        Annotated[
            Path | None, typer.Option("--targets", help="CSV of per-sample targets (captions, numbers)")
        ],
        None,
    ),
    (
        "target_column",
        Annotated[
            list[str] | None,
            typer.Option("--target-column", help="--targets column (repeatable with --regression)"),
        ],
        None,
    ),
    (
        "key_column",
        Annotated[
            str | None,
            typer.Option("--key-column", help="--targets column of file paths (default: row order)"),
        ],
        None,
    ),
    (
        "regression",
        Annotated[bool, typer.Option("--regression", help="--targets columns are numbers")],
        False,
    ),
]


def target_options(*, always: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the label-target options (EMMS, LogME on per-sample targets); the command gets ``label_targets``:
    a :class:`transfersel.targets.LabelTargets`, or None when neither --embedder nor --targets is given
    (unless ``always``)."""
    kind = inspect.Parameter.KEYWORD_ONLY
    extra = [inspect.Parameter(n, kind, annotation=a, default=d) for n, a, d in _TARGETS]

    def pack(s: dict[str, Any]) -> dict[str, Any]:
        if not (always or s["embedder"] or s["targets"] is not None):
            return {"label_targets": None}
        from transfersel.targets import LabelTargets

        return {
            "label_targets": LabelTargets(
                embedders=tuple(s["embedder"] or ()),
                template=None if s["template"] == "{}" else s["template"],
                classes_file=s["classes"],
                csv=s["targets"],
                columns=tuple(s["target_column"] or ()),
                key_column=s["key_column"],
                regression=s["regression"],
            )
        }

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _strip_and_inject(fn, "label_targets", extra, pack)

    return deco


MetricsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        "-m",
        help="metric (repeatable; NAME:KEY=VALUE sets an option, e.g. knn:k=5), or 'all' (pool metrics "
        "ncti, etran, auto included); default: auto",
    ),
]
ReduceOpt = Annotated[
    str,
    typer.Option(
        "--reduce",
        help="project the D x D metrics' features on their top-d principal axes: auto, none or d "
        "(default: the value in transfersel/selection.json); every output states it",
        show_default=False,
    ),
]
REDUCE_DEFAULT = "default"
DataOpt = Annotated[
    str, typer.Option("--data", help="dataset folder (ImageFolder), or its name with --features")
]
FeaturesOpt = Annotated[
    Path | None,
    typer.Option("--features", help="folder of precomputed {model}_{dataset}_feature.npy / _label.npy files"),
]
GroundTruthOpt = Annotated[
    Path | None, typer.Option("--ground-truth", help="CSV dataset,model,accuracy (fine-tuned accuracies)")
]
OutOpt = Annotated[list[Path] | None, typer.Option("--out", "-o", help=".csv/.md/.json file (repeatable)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="also show seconds per score")]
