"""A rich progress bar over the steps of a long job (scoring, evaluation, fine-tuning); no-op when off."""

from __future__ import annotations

from typing import Any

__all__ = ["StepProgress"]


class StepProgress:
    """A rich progress bar over the steps of the current job (no-op when disabled); ``title`` starts it."""

    def __init__(self, enabled: bool, title: str = "working") -> None:
        self.enabled = enabled
        self.title = title
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> StepProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
                console=Console(stderr=True),  # stdout stays clean for tables and JSON
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def start(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total, completed=0)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)
