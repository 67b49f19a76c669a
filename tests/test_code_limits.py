"""The codebase's limits on size, checked so that they stay true: no module over 400 lines, no function over 50
(its decorators aside, its docstring and signature included)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("chat_gateway", "persistence", "shared", "testing")
MODULE_LINES = 400
FUNCTION_LINES = 50


def _modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_packages_are_found() -> None:
    found = {path.relative_to(ROOT).parts[0] for path in _modules()}
    assert found == set(PACKAGES)


def test_no_module_is_over_the_limit() -> None:
    lines = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in _modules()}
    assert {name: count for name, count in lines.items() if count > MODULE_LINES} == {}


def test_no_function_is_over_the_limit() -> None:
    over = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    over[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert over == {}
