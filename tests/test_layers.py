"""The dependency rule holds: layers one way (import-linter's contract) and no import cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

BASE_DIR = Path(__file__).resolve().parent.parent
PACKAGES = ("ragsite", "rag", "resilience")


def import_cycles() -> list[list[str]]:
    """Every cycle of direct imports between our modules (each found once, from its first module)."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_itself_back():
    assert import_cycles() == []


def test_the_layers_contract_is_kept():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=BASE_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
