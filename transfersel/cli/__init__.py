"""The ``transfersel`` command line: parses arguments and calls the library; nothing else lives here.

Every user error (:class:`~transfersel.errors.TransferselError`) is printed as one line and exits 2. The
commands live in :mod:`transfersel.cli.analysis` (metrics, score, rank, evaluate, ensemble),
:mod:`transfersel.cli.models` (extract, finetune, embed, zoo, demo) and :mod:`transfersel.cli.cache`; the
options they share in :mod:`transfersel.cli.app`.
"""

from transfersel.cli import analysis, cache, models
from transfersel.cli.app import app

__all__ = ["app", "main"]
_COMMANDS = (analysis, cache, models)  # imported for their @app.command registrations


def main() -> None:  # pragma: no cover - console-script convenience
    app()
