"""Arrows point one way: flows -> tasks -> adapters_registry -> common. The registry stands alone
(it imports neither `tasks` nor `flows`, not even inside a function), and `common` imports none
of the packages above it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Per module of `package` (relative path), the top-level names of every absolute import in
    it, wherever it stands (module level, a function, a TYPE_CHECKING block)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                    "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value).split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package,forbidden", [
    ("adapters_registry", {"tasks", "flows", "deployments", "benchmarks"}),
    ("common", {"tasks", "flows", "adapters_registry", "deployments", "benchmarks"}),
])
def test_a_lower_layer_imports_nothing_above_it(package, forbidden):
    modules = imported_packages(package)
    assert modules, f"no modules found under {package}/"
    wrong = {module: sorted(names & forbidden) for module, names in modules.items() if names & forbidden}
    assert not wrong, f"{package}/ imports packages above it: {wrong}"


def test_the_walk_sees_an_import_inside_a_function(tmp_path, monkeypatch):
    """The check itself: a lazy import in a function body counts."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n    from tasks.config import resolve_home\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert imported_packages("pkg") == {"pkg/m.py": {"tasks"}}
