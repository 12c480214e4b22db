"""List the public names Pylightnix defines in its own modules.

Usage: ``python tools/pylightnix_names.py <pylightnix checkout>`` prints one
``module name`` line per name: top-level functions, classes and assignments of
``src/pylightnix/*.py`` and ``src/pylightnix/stages/*.py`` that do not start
with ``_``. Names a module only imports (the standard library, typing, other
Pylightnix modules) are not its own and are left out. Public names that only
``docs/Reference.md`` documents are added with the module ``reference``.
The output is kept as ``tests/data/pylightnix_names.txt``.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys


def module_names(path: pathlib.Path) -> list[str]:
    """Public names bound at the top level of one module, in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def main(root: str) -> None:
    base = pathlib.Path(root)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    modules = sorted(base.glob("src/pylightnix/*.py")) + sorted(
        base.glob("src/pylightnix/stages/*.py")
    )
    for path in modules:
        if path.name in ("__init__.py", "imports.py"):
            continue  # re-exports only
        module = path.relative_to(base / "src" / "pylightnix").with_suffix("").as_posix()
        for name in module_names(path):
            if name not in seen:
                seen.add(name)
                rows.append((module.replace("/", "."), name))
    reference = (base / "docs" / "Reference.md").read_text(encoding="utf-8")
    for name in re.findall(r"^## `([A-Za-z][A-Za-z0-9_]*)", reference, flags=re.M):
        if name not in seen:
            seen.add(name)
            rows.append(("reference", name))
    for module, name in rows:
        print(module, name)


if __name__ == "__main__":
    main(sys.argv[1])
