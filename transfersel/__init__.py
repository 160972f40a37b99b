from transfersel.metrics import get_metric, list_metrics

# Bound here, not lazily: the functions share their names with the modules transfersel.rank /
# transfersel.rank, and importing that submodule later would otherwise rebind the package attribute to the
# module. The import is cheap (numpy only; scipy.stats, matplotlib and the metrics load on first use).
# Import the modules themselves with ``from transfersel.rank import ...``.
from transfersel.rank import evaluate, rank, select_ensemble

__all__ = ["evaluate", "get_metric", "list_metrics", "rank", "select_ensemble"]
__version__ = "0.1.0"
