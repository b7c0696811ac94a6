"""Every module of chat is in one of the three layers the import contracts check."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def layered() -> list[set[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [{name.strip() for name in layer.split(":")} for layer in contract["layers"]]


def modules() -> set[str]:
    found = set()
    for path in (ROOT / "chat").iterdir():
        if path.suffix == ".py" and path.stem != "__init__":
            found.add(f"chat.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").exists():
            found.add(f"chat.{path.name}")
    return found


def test_every_module_is_in_exactly_one_layer() -> None:
    layers = layered()
    assert len(layers) == 3
    counted = [name for layer in layers for name in layer]
    assert sorted(counted) == sorted(set(counted)), "a module in two layers"
    assert set(counted) == modules()


def test_the_client_imports_nothing_of_the_server() -> None:
    # chat.client is a program of its own (pip install 'chat[client]'): a server
    # module in it would drag the server's settings and dependencies along.
    # chat.clock (time and anyio alone) is shared.
    offending = []
    for path in (ROOT / "chat" / "client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offending += [
                f"{path.name}: {name}"
                for name in names
                if name.split(".")[0] == "chat"
                and not name.startswith("chat.client")
                and name != "chat.clock"
            ]
    assert offending == []
