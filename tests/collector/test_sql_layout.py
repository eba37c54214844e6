"""SQL lives in storage/ only: the analytics and the routes say what a figure means and
how to add it up, and each backend holds its statements (issue 17). A statement that
creeps back into analytics/ or routes/ would tie them to SQLite again."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import homing_collector

PACKAGE = Path(homing_collector.__file__).parent
RUNS_SQL = {"execute", "executemany", "executescript"}
SQL_WORDS = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|CREATE TABLE)\b")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_in(path: Path) -> list[str]:
    """Where `path` runs a statement, imports sqlite3 or spells SQL (docstrings aside)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in RUNS_SQL:
            found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Import) and any(a.name == "sqlite3" for a in node.names):
            found.append(f"{where}: import sqlite3")
        elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            found.append(f"{where}: from sqlite3 import")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and SQL_WORDS.search(node.value)
        ):
            found.append(f"{where}: {node.value[:40]!r}")
    return found


def test_analytics_and_routes_hold_no_sql() -> None:
    found = [hit for part in ("analytics", "routes") for p in sorted((PACKAGE / part).glob("*.py"))
             for hit in sql_in(p)]  # fmt: skip
    assert found == []


def test_the_command_line_holds_no_sql() -> None:
    """The CLI reaches either backend through the storage protocol only."""
    assert sql_in(PACKAGE / "cli.py") == []


def test_the_check_finds_sql_where_it_is() -> None:
    """The check above can fail: it finds the statements that storage holds."""
    found = sql_in(PACKAGE / "storage" / "analytics_sqlite" / "rollups.py")
    assert any(": .executemany" in hit for hit in found)
    assert any(": .execute" in hit and "many" not in hit for hit in found)
    assert any("import sqlite3" in hit for hit in found)
    assert any("INSERT INTO an_counts" in hit for hit in found)
    found = sql_in(PACKAGE / "storage" / "analytics_pg" / "rollups.py")
    assert any("INSERT INTO an_counts" in hit for hit in found)
