"""The package's layering, checked on its source: the catalogue is the one SQL writer.

Every SQL statement that changes a database (rows, schema, transactions,
state-changing pragmas, ATTACH, VACUUM) lives in `lightstore/catalogue/`; every
other module asks a `Catalogue` method. The check reads each module's string
literals (f-strings too, their placeholders blanked) from its syntax tree;
docstrings are prose and are skipped.

No two modules import each other, even through others, even lazily or only
for type checking: each module can be read, and moved, on top of what it imports.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection, Mapping
from pathlib import Path

import pytest

import lightstore

PACKAGE = Path(lightstore.__file__).parent
CATALOGUE = PACKAGE / "catalogue"

SQL_WRITE = re.compile(
    r"""
      \b(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO\b
    | \bUPDATE\s+(?:OR\s+\w+\s+)?[\w."`\[\]]+\s+SET\b
    | \bDELETE\s+FROM\b
    | \b(?:CREATE|DROP)\s+(?:TEMP\s+|TEMPORARY\s+|UNIQUE\s+|VIRTUAL\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b
    | \bALTER\s+TABLE\b
    | \bVACUUM\b
    | \b(?:ATTACH|DETACH)\b
    | ^\s*(?:BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b
    | \bPRAGMA\s+(?:\w+\.)?\w+\s*=
    | \bPRAGMA\s+(?:\w+\.)?(?:wal_checkpoint|incremental_vacuum|optimize|shrink_memory)\b
    """,
    re.X | re.I,
)

#: Strings outside the catalogue that name write statements without being SQL: what the
#: user-SQL guard says it refused, as (module, function, the string's start).
NOT_SQL = {
    ("query/readonly.py", "_explain", "refused: "),
    ("query/readonly.py", "_denied", "refused: "),
    ("query/sqlauthorizer.py", "", "ALTER TABLE"),  # the names of refused actions
    ("query/sqlauthorizer.py", "authorize", "ATTACH (VACUUM INTO uses it)"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _strings(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(enclosing function, line, text) of every string literal but docstrings.

    An f-string is one text, its placeholders blanked; its parts are not looked at again.
    """
    skip = _docstrings(tree)
    out: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            where = node.name
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else " x " for v in node.values]
            out.append((where, node.lineno, "".join(map(str, parts))))
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((where, node.lineno, node.value))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "")
    return out


def sql_writes(source: str, module: str = "") -> list[str]:
    """Where the source of a module writes SQL: ``module:line: text`` for each write."""
    found = []
    for where, line, text in _strings(ast.parse(source)):
        if not SQL_WRITE.search(text):
            continue
        if any(module == m and where == f and text.startswith(s) for m, f, s in NOT_SQL):
            continue
        found.append(f"{module}:{line}: {text[:80]!r}")
    return found


def _modules_outside_catalogue() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if CATALOGUE not in p.parents]


def test_only_the_catalogue_writes_sql():
    found = []
    for path in _modules_outside_catalogue():
        module = path.relative_to(PACKAGE).as_posix()
        found += sql_writes(path.read_text(encoding="utf-8"), module)
    assert found == [], "SQL writes outside lightstore/catalogue/ (add a Catalogue method):\n" + (
        "\n".join(found)
    )


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO pins (name, rref, created) VALUES (?, ?, ?)",
        "insert or replace into pins (name) values (?)",
        "REPLACE INTO links VALUES (?, ?, ?, ?)",
        "UPDATE builds SET status = ? WHERE id = ?",
        "DELETE FROM links WHERE path = ?",
        "WITH old AS (SELECT 1) DELETE FROM metrics WHERE rref IN old",
        "CREATE TEMP TABLE IF NOT EXISTS gc_cand (ref TEXT PRIMARY KEY) WITHOUT ROWID",
        "DROP TABLE IF EXISTS temp.gc_cand",
        "ALTER TABLE builds ADD COLUMN x",
        "VACUUM",
        "ATTACH DATABASE 'x.sqlite' AS x",
        "BEGIN",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "ROLLBACK TO forget",
        "SAVEPOINT forget",
        "RELEASE forget",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA incremental_vacuum;",
    ],
)
def test_the_check_finds_each_kind_of_write(statement):
    source = f"def f(conn):\n    conn.execute({statement!r})\n"
    assert sql_writes(source, "maintenance/pins.py"), statement


def test_the_check_finds_writes_in_f_strings_and_split_literals():
    source = (
        "def pin(conn, column):\n"
        '    conn.execute(f"INSERT INTO pins (name, {column}, created) VALUES (?, ?, ?)")\n'
        '    conn.execute("DELETE FROM pins "\n'
        '                 "WHERE name = ?")\n'
    )
    assert len(sql_writes(source, "maintenance/pins.py")) == 2


def test_the_check_leaves_reads_and_prose_alone():
    source = (
        '"""Delete from the tree what nothing needs; BEGIN here."""\n'
        "def f(conn):\n"
        '    """Update the set of pins, insert into the report."""\n'
        '    conn.execute("SELECT name FROM pins WHERE name = ?")\n'
        '    conn.execute("PRAGMA quick_check")\n'
        '    raise ValueError("cannot delete the folder; begin again")\n'
    )
    assert sql_writes(source, "maintenance/pins.py") == []


def test_the_guard_message_is_allowed_only_where_it_is():
    message = 'def _explain(m):\n    return f"refused: {m}; ATTACH, VACUUM INTO, ..."\n'
    assert sql_writes(message, "query/readonly.py") == []
    assert sql_writes(message, "maintenance/gc.py") != []
    elsewhere = message.replace("_explain", "_other")
    assert sql_writes(elsewhere, "query/readonly.py") != []


def test_the_catalogue_imports_only_the_foundation():
    """The catalogue is the layer under the store: it imports nothing above it."""
    allowed = ("lightstore.foundation", "lightstore.catalogue")
    found = []
    for path in sorted(CATALOGUE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [
                f"{path.name}: {n}"
                for n in names
                if n.startswith("lightstore") and not n.startswith(allowed)
            ]
    assert found == []


# -- import cycles ---------------------------------------------------------------------------


def module_imports(name: str, source: str, is_package: bool, modules: Collection[str]) -> set[str]:
    """The modules of `modules` that module `name` imports anywhere in `source`: at the top,
    inside functions, under ``if TYPE_CHECKING:``. ``from P import X`` counts as importing
    the module ``P.X`` when there is one, else ``P``."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif origin in modules:
                    found.add(origin)
    found.discard(name)
    return found


def import_cycles(sources: Mapping[str, tuple[str, bool]]) -> list[list[str]]:
    """Each import cycle among modules {name: (source, is_package)}, as the modules on one
    loop of it (first module repeated at the end); one loop per set of modules caught up
    in cycles together."""
    graph = {n: module_imports(n, src, pkg, sources) for n, (src, pkg) in sources.items()}
    # Tarjan's strongly connected components, iteratively (no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_loop(graph, c) for c in components]


def _loop(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    first, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(came_from[path[-1]])
                    return [first, *reversed(path[:-1]), first]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return component  # not reached: every strongly connected component loops


def _package_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def test_no_module_imports_itself_through_others():
    """Counting imports inside functions and under TYPE_CHECKING: a module typed against
    another that imports it is a circle too (split the shared part into its own module)."""
    cycles = import_cycles(_package_sources())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_lazy_and_typing_imports():
    sources = {
        "pkg": ("", True),
        "pkg.sub": ("from pkg.sub import low\n", True),
        "pkg.sub.low": ("def f():\n    from ..top import T\n", False),
        "pkg.top": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.mid import M\n",
            False,
        ),
        "pkg.mid": ("import pkg.sub.low\n", False),
        "pkg.alone": ("import pkg.top\nfrom pkg import sub\n", False),
    }
    assert import_cycles(sources) == [["pkg.mid", "pkg.sub.low", "pkg.top", "pkg.mid"]]
    sources["pkg.top"] = ("from pkg import alone\n", False)
    assert import_cycles(sources) == [["pkg.alone", "pkg.top", "pkg.alone"]]
