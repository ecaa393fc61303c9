"""Every third-party module hearth imports is a dependency pyproject.toml declares.

The package (the folders pyproject installs) may import only `[project] dependencies` — or,
inside the function that needs it, a feature extra's. tests/ and scripts/ may also import the
`test` extra. An import inside `try: ... except ImportError` is optional (the code works
without it) and may be anything. `pytest.importorskip("x")` counts as a plain import: a module
CI does not install would skip its tests silently.

Import names are mapped to distributions through the installed metadata
(`importlib.metadata.packages_distributions`), so the test runs where `.[test]` is installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


@dataclass(frozen=True)
class FoundImport:
    file: Path
    line: int
    module: str  # the top-level name: `huggingface_hub` for `from huggingface_hub.utils import x`
    in_function: bool
    optional: bool  # inside `try: ... except ImportError`


class _ImportFinder(ast.NodeVisitor):
    def __init__(self, file: Path):
        self.file, self.found = file, []
        self._function_depth = self._guard_depth = 0

    def _add(self, node: ast.AST, dotted: str, optional: bool | None = None) -> None:
        optional = self._guard_depth > 0 if optional is None else optional
        self.found.append(FoundImport(self.file, node.lineno, dotted.split(".")[0], self._function_depth > 0, optional))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:  # relative imports stay inside the package
            self._add(node, node.module)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("x") and pytest.importorskip("x") with a literal name
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        first = node.args[0] if node.args else None
        if name in ("import_module", "importorskip") and isinstance(first, ast.Constant) \
                and isinstance(first.value, str) and not first.value.startswith("."):
            self._add(node, first.value, optional=False if name == "importorskip" else None)
        self.generic_visit(node)

    def _visit_function(self, node: ast.AST) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_catches_import_error(h.type) for h in node.handlers)
        self._guard_depth += guarded
        for statement in node.body:
            self.visit(statement)
        self._guard_depth -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try


def _catches_import_error(handler_type: ast.expr | None) -> bool:
    if handler_type is None:
        return True  # a bare `except:`
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any(getattr(n, "id", getattr(n, "attr", None)) in _IMPORT_ERRORS | {"Exception", "BaseException"}
               for n in names)


def find_imports(source: str, file: Path) -> list[FoundImport]:
    finder = _ImportFinder(file)
    finder.visit(ast.parse(source, str(file)))
    return finder.found


def normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip())[0]) for r in requirements}


@dataclass(frozen=True)
class Declared:
    runtime: set[str]
    feature_extras: set[str]  # extras other than `test`: usable by the package inside functions
    test: set[str]
    by_extra: dict  # extra name -> its distributions: a package folder named after an extra
    #                 (serve/ for hearth[serve]) is that feature's own code and may import them anywhere


def declared(pyproject: dict) -> Declared:
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    by_extra = {name: requirement_names(reqs) for name, reqs in extras.items() if name != "test"}
    features = set().union(*by_extra.values())
    return Declared(requirement_names(project["dependencies"]), features, requirement_names(extras.get("test", [])),
                    by_extra)


def undeclared(imports: list[FoundImport], allowed, local: set[str], distributions: dict[str, list[str]]) -> list[str]:
    """One line per import that no allowed distribution provides. `allowed(found)` -> distribution names."""
    problems = []
    for found in imports:
        if found.optional or found.module in local or found.module in sys.stdlib_module_names:
            continue
        where = f"{found.file.relative_to(REPO) if found.file.is_relative_to(REPO) else found.file}:{found.line}"
        provided_by = {normalize(d) for d in distributions.get(found.module, [])}
        if not provided_by:
            problems.append(f"{where}: `{found.module}` is not installed, so no declared distribution provides it")
        elif not provided_by & allowed(found):
            problems.append(f"{where}: `{found.module}` (distribution {', '.join(sorted(provided_by))}) "
                            f"is not declared where this code may use it")
    return problems


def package_dirs(pyproject: dict) -> list[Path]:
    """The folders pyproject installs as packages (`hearth` = the repo root, `hearth.cli` = cli/ ...)."""
    setuptools = pyproject["tool"]["setuptools"]
    root = REPO / setuptools["package-dir"]["hearth"]
    return [root.joinpath(*name.split(".")[1:]) for name in setuptools["packages"]]


def rules(pyproject: dict):
    deps = declared(pyproject)

    def for_package(found: FoundImport) -> set[str]:
        folder = found.file.relative_to(REPO).parts[0] if found.file.is_relative_to(REPO) else ""
        own = deps.by_extra.get(folder, set())
        return deps.runtime | own | (deps.feature_extras if found.in_function else set())

    def for_tests(found: FoundImport) -> set[str]:
        return deps.runtime | deps.feature_extras | deps.test

    return for_package, for_tests


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def test_the_package_imports_only_declared_dependencies(pyproject, distributions):
    for_package, _ = rules(pyproject)
    files = [f for folder in package_dirs(pyproject) for f in sorted(folder.glob("*.py"))]
    assert len(files) > 30 and REPO / "hub" / "pull.py" in files  # the scan sees the package
    imports = [i for f in files for i in find_imports(f.read_text(), f)]
    assert {"huggingface_hub", "httpx2", "filelock", "llama_cpp"} <= {i.module for i in imports}
    problems = undeclared(imports, for_package, {"hearth"}, distributions)
    assert not problems, "\n".join(problems)


def test_tests_and_scripts_import_only_declared_dependencies(pyproject, distributions):
    _, for_tests = rules(pyproject)
    files = sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "scripts").rglob("*.py"))
    local = {"hearth"} | {f.stem for f in files}  # conftest, hub_server, sibling test modules
    imports = [i for f in files for i in find_imports(f.read_text(), f)]
    problems = undeclared(imports, for_tests, local, distributions)
    assert not problems, "\n".join(problems)


def test_the_http_client_hearth_catches_is_the_one_huggingface_hub_uses():
    """hub/pull.py catches httpx2 errors from huggingface_hub's session: they must be one client."""
    import httpx2
    from huggingface_hub.utils import get_session

    assert isinstance(get_session(), httpx2.Client)


# -- the check itself can fail -------------------------------------------------------------------
CASES = [
    # (where, source, flagged)
    ("package", "import yaml\n", True),  # installed (huggingface_hub needs it), declared nowhere
    ("package", "def f():\n    import yaml\n", True),
    ("package", "try:\n    import yaml\nexcept ImportError:\n    yaml = None\n", False),
    ("package", "import torch\n", True),  # the test extra is not the package's
    ("package", "def f():\n    import torch\n", True),
    ("package", "import importlib\nimportlib.import_module('yaml')\n", True),
    ("package", "from huggingface_hub.utils import get_session\nimport filelock, httpx2\n", False),
    ("package", "import os, json\nfrom . import store\n", False),
    ("tests", "import torch\nimport pytest\n", False),
    ("tests", "import pytest\npytest.importorskip('yaml')\n", True),  # would skip silently in CI
    ("tests", "import no_such_module_anywhere\n", True),
]


@pytest.mark.parametrize("where, source, flagged", CASES)
def test_the_check_flags_undeclared_imports(where, source, flagged, pyproject, distributions):
    for_package, for_tests = rules(pyproject)
    allowed = for_package if where == "package" else for_tests
    problems = undeclared(find_imports(source, REPO / "example.py"), allowed, {"hearth"}, distributions)
    assert bool(problems) == flagged, problems


def test_a_feature_extra_is_allowed_only_inside_a_function(distributions):
    pyproject = {"project": {"dependencies": ["numpy>=1"], "optional-dependencies": {"yaml": ["PyYAML>=5"]}}}
    for_package, _ = rules(pyproject)
    inside = find_imports("def load():\n    import yaml\n", REPO / "example.py")
    top = find_imports("import yaml\n", REPO / "example.py")
    assert undeclared(inside, for_package, set(), distributions) == []
    assert undeclared(top, for_package, set(), distributions)
