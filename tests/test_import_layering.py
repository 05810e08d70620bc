"""The import layering, read from the source with `ast` (nothing is imported).

  pagedllm/core/     no torch: not directly, nor through the pagedllm modules it loads on import
  pagedllm/engine/   nothing from pagedllm.server (what both need lives below both: pagedllm/errors.py)
  pagedllm/kernels/  nothing from pagedllm.attention, pagedllm.layers, pagedllm.models
  tests/             pagedllm, tests.helpers, stdlib and third-party only: not another test
                     module (tests.<other>, or a sibling reached through sys.path), not benchmarks

Imports inside functions count too: they run as soon as the function does. For the transitive
torch rule only what runs on import counts (not function bodies, not `if TYPE_CHECKING:`).
Each violation is reported as file:line: the import statement.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("pagedllm", "tests")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the root: "pagedllm/engine/async_llm.py"
    line: int
    targets: tuple[str, ...]  # absolute: "torch.nn", "pagedllm.errors.EngineDeadError" (from-import: module.name)
    statement: str  # as written, unparsed
    on_import: bool  # runs when the module is imported: not in a function, not under TYPE_CHECKING

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.statement}"


Scan = dict[str, list[Import]]  # module name ("pagedllm.core.scheduler") -> its imports


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(node: ast.AST, on_import: bool = True) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it runs on import (ast.walk, minus function bodies and TYPE_CHECKING)."""
    yield node, on_import
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _nodes(stmt, False)
        for stmt in node.orelse:
            yield from _nodes(stmt, on_import)
        return
    inner = on_import and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for child in ast.iter_child_nodes(node):
        yield from _nodes(child, inner)


def _imports(root: Path, path: Path) -> list[Import]:
    rel = path.relative_to(root)
    package = list(rel.with_suffix("").parts[:-1])  # what a relative import starts from
    found = []
    for node, on_import in _nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from pagedllm import server` loads pagedllm.server: name each imported name in full.
            targets = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.append(Import(rel.as_posix(), node.lineno, tuple(targets), ast.unparse(node), on_import))
    return found


def scan(root: Path) -> Scan:
    modules: Scan = {}
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = _imports(root, path)
    return modules


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _names(imp: Import, *prefixes: str) -> bool:
    return any(_under(t, *prefixes) for t in imp.targets)


def _loaded(scan: Scan, target: str) -> list[str]:
    """The scanned modules that importing `target` runs: its module and the packages above it."""
    parts = target.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in scan]


def core_imports_torch(scan: Scan) -> list[str]:
    core = [m for m in scan if _under(m, "pagedllm.core")]
    found = [str(i) for m in core for i in scan[m] if _names(i, "torch")]
    # Through other modules: follow what runs on import, from core/ outwards.
    via: dict[str, str] = {m: m for m in core}  # reached module -> the core module that reached it
    todo = list(core)
    while todo:
        module = todo.pop()
        for imp in scan[module]:
            if not imp.on_import:
                continue
            if _names(imp, "torch") and not _under(module, "pagedllm.core"):
                found.append(f"{imp} (loaded by {via[module]})")
            for loaded in (m for t in imp.targets for m in _loaded(scan, t)):
                if loaded not in via:
                    via[loaded] = via[module]
                    todo.append(loaded)
    return found


def engine_imports_server(scan: Scan) -> list[str]:
    return [str(i) for m, imps in scan.items() if _under(m, "pagedllm.engine")
            for i in imps if _names(i, "pagedllm.server")]


def kernels_import_upwards(scan: Scan) -> list[str]:
    return [str(i) for m, imps in scan.items() if _under(m, "pagedllm.kernels")
            for i in imps if _names(i, "pagedllm.attention", "pagedllm.layers", "pagedllm.models")]


def _foreign_to_tests(target: str, local: set[str]) -> bool:
    top = target.split(".")[0]
    return (top == "tests" and not _under(target, "tests.helpers")) or top == "benchmarks" or top in local


def imports_of_other_tests(scan: Scan) -> list[str]:
    # A bare `import core_fakes` finds a test directory's module through sys.path (pytest's rootdir
    # insertion): any name of a file or folder under tests/ is one.
    local = {part for m in scan if _under(m, "tests") for part in m.split(".")[1:]}
    return [str(i) for m, imps in scan.items() if _under(m, "tests")
            for i in imps if any(_foreign_to_tests(t, local) for t in i.targets)]


CONTRACTS: dict[str, Callable[[Scan], list[str]]] = {
    "pagedllm/core/ imports no torch": core_imports_torch,
    "pagedllm/engine/ imports nothing from pagedllm.server": engine_imports_server,
    "pagedllm/kernels/ imports nothing from attention/, layers/, models/": kernels_import_upwards,
    "tests/ import only pagedllm, tests.helpers, stdlib and third-party": imports_of_other_tests,
}


@pytest.fixture(scope="module")
def repo_scan() -> Scan:
    return scan(REPO)


@pytest.mark.parametrize("contract", list(CONTRACTS))
def test_repo_keeps_contract(contract: str, repo_scan: Scan) -> None:
    violations = CONTRACTS[contract](repo_scan)
    assert not violations, f"{contract}, but:\n" + "\n".join(violations)


SYNTHETIC = {
    "pagedllm/__init__.py": "",
    "pagedllm/outputs.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n\n"
                           "def f():\n    import torch\n",  # neither runs on import
    "pagedllm/heavy.py": "import os\nimport torch.nn\n",
    "pagedllm/core/__init__.py": "",
    "pagedllm/core/a.py": "import os\n\n\ndef f():\n    import torch\n",
    "pagedllm/core/b.py": "from pagedllm import outputs\nfrom .. import heavy\n",
    "pagedllm/engine/__init__.py": "",
    "pagedllm/engine/e.py": "from pagedllm.errors import EngineDeadError\n\n\nasync def g():\n"
                            "    from pagedllm.server import api_server\n",
    "pagedllm/kernels/k.py": "from pagedllm.kernels.qkv import rows\nfrom ..layers.linear import Linear\n",
    "tests/helpers/__init__.py": "",
    "tests/helpers/h.py": "from tests.helpers.other import x\nfrom . import other\n",
    "tests/core/core_fakes.py": "",
    "tests/core/test_x.py": "import pytest\nfrom core_fakes import make\nfrom tests.server.conftest import KEY\n"
                            "import benchmarks.gpu.m\nfrom tests import helpers\nfrom pagedllm.core import a\n",
}


def test_checker_catches_each_kind_of_violation(tmp_path: Path) -> None:
    for name, text in SYNTHETIC.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    synthetic = scan(tmp_path)
    found = {contract: [v.split(": ", 1)[0] for v in check(synthetic)] for contract, check in CONTRACTS.items()}
    assert found == {
        "pagedllm/core/ imports no torch": ["pagedllm/core/a.py:5", "pagedllm/heavy.py:2"],
        "pagedllm/engine/ imports nothing from pagedllm.server": ["pagedllm/engine/e.py:5"],
        "pagedllm/kernels/ imports nothing from attention/, layers/, models/": ["pagedllm/kernels/k.py:2"],
        "tests/ import only pagedllm, tests.helpers, stdlib and third-party":
            ["tests/core/test_x.py:2", "tests/core/test_x.py:3", "tests/core/test_x.py:4"],
    }
    assert any("import torch.nn (loaded by pagedllm.core.b)" in v for v in core_imports_torch(synthetic))
