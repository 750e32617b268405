"""The shape of issue 14: `tasks/` is plain Python (no Prefect), Prefect sits at the edges in
`flows/`; every stage package imports in an interpreter where Prefect cannot be imported; no
module of the product over 300 lines, no function over 40. (The registry's own import rule is
tests/adapters_registry/test_imports.py.)"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("tasks.market", "tasks.samples", "tasks.training", "tasks.evaluation", "tasks.answering")


def _modules(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in folder.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_tasks_never_import_prefect_or_flows():
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in _imports(path)
                                                     if name.split(".")[0] in {"prefect", "flows"})
                 for path in (ROOT / "tasks").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


BLOCK_PREFECT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
assert not any(m == "prefect" or m.startswith("prefect.") for m in sys.modules)
print("imported", len(sys.argv) - 1)
"""


def test_every_stage_module_imports_without_prefect():
    """As with Prefect uninstalled: a finder that refuses `prefect` sits first on sys.meta_path."""
    modules = [m for stage in STAGES for m in _modules(stage)] + ["tasks.config", "tasks.promotion",
                                                                  "tasks.reporting", "tasks.housekeeping"]
    assert "tasks.market.data" in modules and "tasks.training.train" in modules
    done = subprocess.run([sys.executable, "-c", BLOCK_PREFECT, *modules], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"imported {len(modules)}"


def test_the_block_itself_works():
    """The check above could pass vacuously if the finder did not block: importing flows must fail."""
    done = subprocess.run([sys.executable, "-c", BLOCK_PREFECT, "flows.steps"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0 and "blocked by the test" in done.stderr


PRODUCT = ("tasks", "flows", "adapters_registry", "common", "deployments")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 40


def _product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))


def test_no_module_over_300_lines():
    """A module a newcomer can read in one sitting (issue 14). Benchmarks and tests are scripts
    and suites, not the product, and are not held to it."""
    long = {str(p.relative_to(ROOT)): n for p in _product_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_over_40_lines():
    """Counted from the `def` line (decorators excluded) to the function's last line."""
    long = {}
    for path in _product_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert long == {}


def test_the_size_checks_see_the_product():
    """They would pass vacuously over an empty or wrong tree."""
    files = {str(p.relative_to(ROOT)) for p in _product_files()}
    assert {"tasks/training/train.py", "flows/daily_retrain.py", "adapters_registry/store.py",
            "common/files.py"} <= files
