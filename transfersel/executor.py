"""Where the units of work of a command run: in this process (``local``) or as Ray tasks (``ray``).

Ray does the scheduling (resources per task: ``num_cpus`` = the task's torch threads, ``num_gpus=1`` on
CUDA), the retries of a worker process that dies (``max_retries``) and the placement on a cluster. This
module only keeps at most ``jobs`` tasks in flight, collects what they return, shows one progress bar over
the tasks and turns a task that raised into a failure with its reason (the others go on). Ray is imported
only when the ``ray`` executor is used: the package works without it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from transfersel.errors import InputError

__all__ = ["EXECUTORS", "Executor", "Failed", "TaskPool", "session"]

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3  # a worker process killed mid-task (SIGKILL, a lost node) is retried this often
WAIT_SECONDS = 0.2
_SESSIONS: list[Executor] = []  # open session() blocks: their pools leave Ray running for the next pool


@dataclass(frozen=True)
class Executor:
    """How a command runs its units of work.

    ``kind``: ``"local"`` (this process, as always) or ``"ray"`` (one Ray task per unit). ``address``: a
    running Ray cluster (``"auto"``, ``"ray://host:10001"``, ``host:6379``); None starts a local one
    (or joins ``RAY_ADDRESS``, as ``ray.init`` does). ``jobs``: tasks in flight at most (None: the
    cluster's capacity). ``threads_per_job``: torch threads (and CPUs requested) per task (None: 1).
    """

    kind: str = "local"
    address: str | None = None
    jobs: int | None = None
    threads_per_job: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        for flag, value in (("--jobs", self.jobs), ("--threads-per-job", self.threads_per_job)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{flag} must be an integer >= 1, got {value!r}")
        if self.kind == "local" and (self.address or self.jobs or self.threads_per_job):
            raise InputError(
                "--ray-address, --jobs and --threads-per-job apply to --executor ray; add --executor ray"
            )

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def refuse_ray(self, given: str) -> None:
        """``ray`` runs extraction: refused with an option (``given``) under which nothing is extracted."""
        if self.is_ray:
            raise InputError(
                f"--executor ray runs feature extraction; {given} needs none: drop --executor ray"
            )


@dataclass(frozen=True)
class Failed:
    """What a task returns instead of its result when it raised: the one-line reason."""

    reason: str


def reason(exc: BaseException) -> str:
    """One line: the exception's type and message (its own message for a transferSel error)."""
    from transfersel.errors import TransferselError

    text = " ".join(str(exc).split())
    return text if isinstance(exc, TransferselError) else f"{type(exc).__name__}: {text[:300]}"


def _run_task(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], threads: int) -> Any:
    """Runs in the Ray worker: the task's own torch thread count, and its exception as a :class:`Failed`
    (an exception would make Ray print a traceback; a killed process still fails the task, and is retried)."""
    import torch

    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        return Failed(reason(exc))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'transfersel[ray]'") from None
    return ray


def worker_device(device: str) -> str:
    """The device name a task uses: Ray shows a task its one GPU as ``cuda:0`` whatever the driver named."""
    return "cuda" if device.startswith("cuda") else device


def _init_ray(ray: Any, executor: Executor) -> bool:
    """Join (``--ray-address``, ``RAY_ADDRESS``) or start Ray unless it runs; True if this call started it."""
    if ray.is_initialized():
        return False
    address = executor.address or os.environ.get("RAY_ADDRESS")
    threads = executor.threads_per_job or 1
    local_cpus = None if address or not executor.jobs else executor.jobs * threads
    if not address:  # Ray renices its workers by +15 by default: they would lose every core to the
        # driver's neighbours on a shared machine; they run at the driver's niceness instead
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(
            address=address,
            num_cpus=local_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(
            f"cannot connect to Ray at {address}: {' '.join(str(exc).split())[:200]}; "
            "start it with `ray start --head` or drop --ray-address for a local one"
        ) from None
    return True


@contextmanager
def session(executor: Executor | None) -> Iterator[None]:
    """One Ray for a command that runs several pools (``evaluate``: one per dataset), started at the first
    task and shut down at the end if this started it; with the local executor (or None) it does nothing."""
    if executor is None or not executor.is_ray:
        yield
        return
    ray = _import_ray()
    running = ray.is_initialized()
    _SESSIONS.append(executor)
    try:
        yield
    finally:
        _SESSIONS.pop()
        if not running and not _SESSIONS and ray.is_initialized():
            ray.shutdown()


class TaskPool:
    """Ray tasks with at most ``jobs`` in flight, one progress bar, failures as values, Ctrl-C cancelling.

    Use as a context manager (connects to or starts Ray; shuts down only a Ray it started)::

        with TaskPool(executor, device="cpu", title="extracting") as pool:
            pool.submit("resnet20", fn, arg1, arg2)
            for label, result in pool.results():  # result: fn's value, or Failed(reason)
                ...  # may pool.submit(...) more tasks here

    ``fn`` must be importable by the workers (a module-level function of the package).
    """

    def __init__(self, executor: Executor, *, device: str, title: str, progress: bool = True) -> None:
        self.executor, self.device, self.title, self.progress = executor, device, title, progress
        self._ray: Any = None
        self._started = False
        self._queue: deque[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        self._running: dict[Any, str] = {}
        self._remote: Any = None
        self._bar: Any = None
        self._task: Any = None
        self.done = self.failed = 0

    # --- cluster ---------------------------------------------------------------------------------
    def __enter__(self) -> TaskPool:
        self._ray = _import_ray()
        return self

    def _connect(self) -> None:
        """Join or start Ray at the first task (nothing to run, e.g. every run logged: no cluster)."""
        ray = self._ray
        threads = self.executor.threads_per_job or 1
        self._started = _init_ray(ray, self.executor)
        resources = ray.cluster_resources()
        self.gpu = self.device.startswith("cuda") or (self.device == "auto" and resources.get("GPU", 0) > 0)
        capacity = int(resources.get("GPU", 0)) if self.gpu else int(resources.get("CPU", 1) // threads)
        self.jobs = self.executor.jobs or max(1, capacity)
        self.threads = threads
        self._remote = ray.remote(_run_task).options(
            num_cpus=threads, num_gpus=1 if self.gpu else 0, max_retries=MAX_RETRIES, retry_exceptions=False
        )
        if self.progress:
            self._start_bar()

    def __exit__(self, *exc: object) -> None:
        try:
            if self._running:  # an error or Ctrl-C: stop the tasks still running, keep what finished
                for ref in list(self._running):
                    self._ray.cancel(ref, force=True)
                self._running.clear()
            if self._bar is not None:
                self._bar.stop()
        finally:
            if self._started and not _SESSIONS:  # a session() shuts its Ray down at its end
                self._ray.shutdown()

    # --- tasks -----------------------------------------------------------------------------------
    def submit(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` as one task; ``label`` (the model) names it in failures."""
        if self._remote is None:
            self._connect()
        self._queue.append((label, fn, args, kwargs))
        self._show()

    def results(self) -> Iterator[tuple[str, Any]]:
        """``(label, result or Failed)`` as tasks finish; tasks submitted meanwhile are run too."""
        ray = self._ray
        while self._queue or self._running:
            while self._queue and len(self._running) < self.jobs:
                label, fn, args, kwargs = self._queue.popleft()
                self._running[self._remote.remote(fn, args, kwargs, self.threads)] = label
            self._show()
            ready: list[Any] = []
            while not ready:  # short waits: Ctrl-C is only seen between them
                ready, _ = ray.wait(list(self._running), num_returns=1, timeout=WAIT_SECONDS)
            label = self._running.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the worker died MAX_RETRIES + 1 times, or Ray failed
                value = Failed(f"Ray task failed: {' '.join(str(exc).split())[:300]}")
            if isinstance(value, Failed):
                self.failed += 1
            else:
                self.done += 1
            self._show()
            yield label, value

    # --- progress --------------------------------------------------------------------------------
    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),  # stdout stays clean for tables and JSON
        )
        self._bar.start()
        self._task = self._bar.add_task(f"{self.title} (ray)", total=0, state="")

    def _show(self) -> None:
        if self._bar is None:
            return
        total = self.done + self.failed + len(self._running) + len(self._queue)
        state = f"done {self.done} · running {len(self._running)} · failed {self.failed}"
        self._bar.update(self._task, total=total, completed=self.done + self.failed, state=state)
