"""The import rules: one library with thin faces, an acyclic package graph, one llama.cpp binding.

Read from the source with `ast` (every import, at module level or inside a function), so a rule
broken in a lazily imported corner fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "serve", "runtime", "quantize", "hub")
GROUND = {"errors", "paths", "units"}
# Bottom to top: a layer may import the layers before it, never one after it. The faces (cli,
# serve) sit on top; the CLI may start the server (`hearth serve`), the server never the CLI.
LAYERS = ["ground", "hub", "runtime", "quantize", "library", "serve", "cli"]
FACES = ("cli", "serve")


def layer_of(module: str) -> str:
    """'runtime.engine' -> 'runtime'; 'api' -> 'library'; 'errors' -> 'ground'."""
    top = module.split(".")[0]
    if top in PACKAGES:
        return top
    return "ground" if top in GROUND else "library"


def source_files() -> list[Path]:
    files = [p for p in ROOT.glob("*.py")]
    for package in PACKAGES:
        files += list((ROOT / package).rglob("*.py"))
    return sorted(files)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(absolute module inside hearth, or 'ext:NAME' for a third-party one, line) of every import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(f"ext:{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((f"ext:{node.module}", node.lineno))
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if node.module is None:  # `from . import x`: each name may be a module
                found += [(".".join([*base, alias.name]), node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return found


def edges() -> list[tuple[str, str, str, int]]:
    """(importing layer, imported layer, where, line) for every import between hearth's layers."""
    result = []
    for path in source_files():
        src = layer_of(module_name(path))
        for target, line in imports_of(path):
            if target.startswith("ext:") or not target:
                continue
            result.append((src, layer_of(target), str(path.relative_to(ROOT)), line))
    return result


def test_the_library_never_imports_a_face():
    bad = [f"{where}:{line}" for src, dst, where, line in edges() if src not in FACES and dst in FACES]
    assert bad == []


def test_web_frameworks_are_imported_only_by_the_server():
    """`hearth --help` and every other command stay free of FastAPI, uvicorn and pydantic."""
    web = ("fastapi", "uvicorn", "starlette", "pydantic")
    users = sorted({str(p.relative_to(ROOT)) for p in source_files() for target, _line in imports_of(p)
                    if target.startswith("ext:") and target[4:].split(".")[0] in web})
    assert users and all(u.startswith("serve/") for u in users), users


def test_layers_import_only_downwards():
    """Acyclic by construction: every import goes to the same layer or one below it."""
    bad = [f"{where}:{line} ({src} -> {dst})" for src, dst, where, line in edges()
           if LAYERS.index(dst) > LAYERS.index(src)]
    assert bad == []


def test_the_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for src, dst, _where, _line in edges():
        if src != dst:
            graph.setdefault(src, set()).add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [layer for layer in graph if reaches(layer, layer, set())] == []


def test_llama_cpp_is_imported_only_by_the_engine():
    users = sorted({str(p.relative_to(ROOT)) for p in source_files()
                    for target, _line in imports_of(p) if target.split(".")[0] == "ext:llama_cpp"})
    assert users == ["runtime/engine.py"]


@pytest.mark.parametrize("rule", ["cycle", "upward", "llama"])
def test_the_rules_catch_a_violation(tmp_path, rule):
    """The checks above fail on a broken tree (a test that cannot fail proves nothing)."""
    fake = tmp_path / "tree"
    for package in (*PACKAGES,):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
    (fake / "errors.py").write_text("")
    if rule == "cycle":
        (fake / "hub" / "store.py").write_text("from ..runtime import models\n")
        (fake / "runtime" / "models.py").write_text("from ..hub import store\n")
    elif rule == "upward":
        (fake / "runtime" / "session.py").write_text("def f():\n    from ..cli import app\n")
    else:
        (fake / "hub" / "pull.py").write_text("import llama_cpp\n")
    globals()["ROOT"] = fake
    try:
        check = {"cycle": test_the_package_graph_has_no_cycle, "upward": test_layers_import_only_downwards,
                 "llama": test_llama_cpp_is_imported_only_by_the_engine}[rule]
        with pytest.raises(AssertionError):
            check()
    finally:
        globals()["ROOT"] = Path(__file__).resolve().parents[2]
