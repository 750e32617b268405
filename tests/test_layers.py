"""The layers of issue 14: `tasks/` is plain Python (no Prefect), Prefect sits at the edges in
`flows/`; every stage package imports in an interpreter where Prefect cannot be imported."""
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
