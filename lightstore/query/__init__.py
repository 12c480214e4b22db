"""Questions about a store's history, as a small Python API the command line wraps.

- `history`, `derivations`, `realizations`, `disk_usage`: store-wide listings,
  each one SQL statement over indexed tables, returning dict rows;
- `resolve`, `resolve_all`, `select`: what a user typed (hash prefix, pin,
  name, selector such as ``train@latest`` or ``train[lr=0.01]``) -> DRef(s)/RRef(s);
- `neighbours`, `closure`, `tree_lines`, `dot`, `labels`: the dependency graph;
- `describe`: everything about one object; `compare`: two of them side by
  side; `build_log`: what a build printed; `artifact_path`: a file of a run;
- `metric_points`, `metric_table`, `series_summaries`: the metrics of runs,
  curves (series over steps) included, as rows.
- `upstream_fields`: the config fields of the stages runs were built on
  (``train.lr`` for an evaluate run); `history` reads such fields too, and a
  `Several` stands for the values of several upstream runs that disagree.

Every function that takes a reference takes a `Store` and anything the
command line accepts as REF.
- `open_view`, `run_sql`, `iter_sql`: a read-only view of a store, and user SQL on it
  (with a deadline; `iter_sql` streams the rows), under the rules of
  `lightstore.query.sqlguard`, which the browser's SQL editor shares.

Example::

    from lightstore import Store
    from lightstore.query import history

    for row in history(Store.open(root), name="train", where="duration > 60", fields=["lr"]):
        print(row["rref"], row["lr"], row["duration"])

    # runs of train with their lr and loss, best first, as a DataFrame
    history(store, "train", fields=["lr"], metrics=["loss"], sort="loss").to_pandas()

    # the loss curves of the runs tagged baseline, one row per (run, step)
    runs = [r["rref"] for r in history(store, "train", tags=["baseline"])]
    curves = metric_points(store, runs, ["loss"], plain=False).to_pandas()
    curves.pivot(index="step", columns="rref", values="value").plot(logy=True)
    # evaluate's r2 by the lr and hidden size of the train run each one used
    history(store, "evaluate", fields=["train.lr", "train.hidden"], metrics=["r2"])
"""

from lightstore.query.buildlog import build_log
from lightstore.query.compare import artifact_path, compare
from lightstore.query.curves import metric_points, metric_table, series_summaries
from lightstore.query.describe import describe, files
from lightstore.query.errors import AmbiguousReferenceError, QueryError
from lightstore.query.filters import ConfigCondition, json_path, parse_condition, parse_time
from lightstore.query.graph import (
    closure,
    closure_edges,
    dot,
    label,
    labels,
    neighbours,
    tree_lines,
)
from lightstore.query.history import (
    HISTORY_COLUMNS,
    derivations,
    disk_usage,
    field_keys,
    history,
    metric_keys,
    realizations,
    sizes_of,
)
from lightstore.query.readonly import (
    ReadOnlyCatalogue,
    catalogue_path,
    iter_sql,
    open_view,
    run_sql,
)
from lightstore.query.resolve import resolve, resolve_all, select
from lightstore.query.rows import Rows, Several
from lightstore.query.selectors import Selector, parse_selector
from lightstore.query.upstream import upstream_fields

__all__ = [
    "HISTORY_COLUMNS",
    "AmbiguousReferenceError",
    "ConfigCondition",
    "QueryError",
    "ReadOnlyCatalogue",
    "Rows",
    "Selector",
    "Several",
    "artifact_path",
    "build_log",
    "catalogue_path",
    "closure",
    "closure_edges",
    "compare",
    "derivations",
    "describe",
    "disk_usage",
    "dot",
    "field_keys",
    "files",
    "history",
    "json_path",
    "label",
    "labels",
    "metric_keys",
    "metric_points",
    "metric_table",
    "neighbours",
    "open_view",
    "parse_condition",
    "parse_selector",
    "parse_time",
    "realizations",
    "resolve",
    "resolve_all",
    "iter_sql",
    "run_sql",
    "select",
    "series_summaries",
    "sizes_of",
    "tree_lines",
    "upstream_fields",
]
