"""The package's layers, read from its own imports: each package imports only the layers below it,
and no module imports paramem inside a function except the CLI's (start-up time) and the imports that
keep an optional dependency from loading. A new arrow back up fails here (docs/architecture.md)."""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "paramem"
# What each package may import besides itself, from the bottom up (docs/architecture.md draws it).
# The store keeps files and never reads a model; the memory forms learn and never touch the store.
BELOW: dict[str, set[str]] = {"errors": set(), "metrics": set()}
BELOW["files"] = {"errors"}
BELOW["config"] = {"errors"}
BELOW["data"] = {"config", "files", "errors"}
BELOW["model"] = BELOW["data"] | {"data"}
BELOW["store"] = BELOW["data"] | {"data"}
BELOW["augment"] = BELOW["model"] | {"model", "metrics"}
BELOW["memory"] = BELOW["augment"] | {"augment"}
BELOW["read"] = BELOW["memory"] | {"memory", "store"}
BELOW["lifecycle"] = BELOW["read"] | {"read"}
BELOW["serve"] = BELOW["lifecycle"] | {"lifecycle"}
BELOW["evaluate"] = BELOW["lifecycle"] | {"lifecycle"}
BELOW["cli"] = set(BELOW) | {"serve", "evaluate"}


def modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, inside a function) for each import of paramem in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside: set[int] = set()
    typing_only: set[int] = set()  # `if TYPE_CHECKING:` imports are read by type checkers, never run
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            typing_only.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        found += [
            (n.removeprefix("paramem."), node.lineno, id(node) in inside) for n in names if n.startswith("paramem.")
        ]
    return found


def package(module: str) -> str:
    return module.split(".")[0]


def test_every_package_is_placed_in_a_layer():
    assert {package(m) for m in modules() if m} <= set(BELOW)


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for module, path in modules().items():
        for target, line, _ in imports(path):
            mine, theirs = package(module or "__init__"), package(target)
            if mine != theirs and theirs not in BELOW.get(mine, set()):
                wrong.append(f"{path.relative_to(SOURCE)}:{line} imports {target}")
    assert wrong == []


def test_modules_import_each_other_in_no_circle():
    graph = {m: {t for t, _, _ in imports(p) if t in modules() and t != m} for m, p in modules().items()}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_paramem_is_imported_inside_functions_only_by_the_cli():
    hidden = [
        f"{path.relative_to(SOURCE)}:{line} imports {target}"
        for module, path in modules().items()
        if package(module or "__init__") != "cli"
        for target, line, inside in imports(path)
        if inside
    ]
    assert hidden == []


def test_every_module_is_under_400_lines():
    long = {str(p.relative_to(SOURCE)): n for p in modules().values() if (n := len(p.read_text().splitlines())) >= 400}
    assert long == {}
