"""The package's layers: the import contract in pyproject.toml holds, it fails when a forbidden
import is added, and no module imports another module's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(where), "PATH": str(LINT.parent)})


@pytest.fixture(scope="module")
def linter() -> Path:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (make setup installs it)")
    return LINT


def test_the_import_contract_holds(linter: Path) -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, forbidden, contract", [
    ("method/loss.py", "from dhkd.config import Config", "Layers"),          # the method reads no configuration
    ("method/loss.py", "from dhkd.errors import DhkdError", "torch only"),   # ... and raises no CLI errors
    ("data/files.py", "from dhkd.metrics import curves", "Layers"),         # siblings stay independent
    ("run/train.py", "from dhkd.kit import tables", "Only the command line"),  # nothing below the kit imports it
    ("data/files.py", "from dhkd.data import load", "cycles"),              # a cycle inside a layer
    ("../benchmarks/report.py", "from dhkd.cli import main", "not its command line"),  # the old cli <-> bench cycle
])
def test_a_forbidden_import_breaks_the_contract(linter: Path, tmp_path: Path, module: str, forbidden: str,
                                                 contract: str) -> None:
    shutil.copytree(ROOT / "dhkd", tmp_path / "dhkd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "dhkd" / module
    lines = target.read_text().split("\n")
    first_import = next(i for i, line in enumerate(lines) if line.startswith(("import ", "from ")) and "__future__" not in line)
    lines.insert(first_import, forbidden)
    target.write_text("\n".join(lines))
    done = lint(tmp_path)
    assert done.returncode != 0, done.stdout
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), done.stdout


def private_imports(path: Path) -> list[str]:
    """``from dhkd.x import _name`` (or of benchmarks.x) in ``path``: a private name crossing modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("dhkd", "benchmarks"):
            found += [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}: {alias.name} from {node.module}"
                      for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    files = [*ROOT.glob("dhkd/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("notebooks/*.py")]
    found = [hit for path in files for hit in private_imports(path)]
    assert not found, "make these public or keep them in their module:\n" + "\n".join(found)


def test_the_private_import_check_can_fail(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from dhkd.data.files import IGNORED_NAMES\nfrom dhkd.run.lock import _process_start\n")
    assert private_imports(probe) == ["probe.py:2: _process_start from dhkd.run.lock"]
