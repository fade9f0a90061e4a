"""No import circles in micronet_lib (issue #17), checked two ways.

- Statically: every module is parsed with ``ast``; each ``import`` / ``from … import`` anywhere in it
  (module level and inside functions: a lazy import still closes a circle for the reader, and bites
  as soon as the function runs during another module's import) is an edge of the package's import
  graph, to the module named and to ``pkg.name`` for ``from pkg import name``. The graph must have no
  strongly connected component of more than one module (Tarjan).
- Dynamically: every module is imported on its own, in a fresh process that has never imported
  micronet_lib (forked from one interpreter holding only torch & co., see ``_FORK_EACH``), so a circle
  that only bites in one import order fails here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "micronet_lib"

# Circles known today, each a frozenset of modules. Every entry must still be a circle (a stale entry
# fails), so the list can only shrink.
ALLOWED_CIRCLES: set[frozenset[str]] = set()  # none: a new circle fails here

# Modules larger than this are split along their jobs (issue #17: a module a reader can hold in their head).
MAX_LINES = 400
ALLOWED_LONG: set[str] = set()  # none: every module stays at ~400 lines or fewer


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of ``root/package`` (packages by their ``__init__``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement may load: the module named, and ``module.name`` for each name
    (``from pkg import sub`` loads the submodule ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importer's package
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (module-level and function-level imports alike)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(module, path, node):
                # A module never waits on a package that holds it: Python runs the package first, and
                # the package importing its own modules is how packages are built.
                if target in modules and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_circle_finder_sees_lazy_relative_and_package_circles(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from .a import thing\n",  # a lazy relative import closes a <-> b
        "pkg/c.py": "import pkg.d\n",
        "pkg/d.py": "",
        "pkg/sub/__init__.py": "from .inner import x\nfrom pkg import e\n",
        "pkg/sub/inner.py": "from ..d import y\n",  # inner -> sub (its own package): not an edge
        "pkg/e.py": "from pkg.sub import inner\n",  # e -> sub and e -> sub.inner: e <-> sub
    })
    graph = import_graph(module_files(tmp_path, "pkg"))
    assert graph["pkg.c"] == {"pkg.d"} and graph["pkg.sub.inner"] == {"pkg.d"}
    assert sorted(map(sorted, circles(graph))) == [["pkg.a", "pkg.b"], ["pkg.e", "pkg.sub"]]


def test_no_import_circles():
    found = set(circles(import_graph(module_files(REPO))))
    new = [sorted(c) for c in found - ALLOWED_CIRCLES]
    assert not new, f"import circle(s) {new}: move the shared piece to the module that owns it"
    stale = [sorted(c) for c in ALLOWED_CIRCLES - found]
    assert not stale, f"{stale} is no longer a circle: delete it from ALLOWED_CIRCLES"


def test_modules_stay_short():
    long = {str(p.relative_to(REPO)): n for p in module_files(REPO).values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= ALLOWED_LONG, f"modules over {MAX_LINES} lines: {long}; split them along their jobs"


# One interpreter imports the third-party libraries every module needs (torch alone takes ~1-3 s) and
# none of micronet_lib, then forks one child per module; each child imports its module into a process
# that has never seen micronet_lib, as ``python -c "import micronet_lib.X"`` would after ``import torch``.
# Which third-party modules are loaded first cannot change the order micronet_lib's own modules import
# each other in, and a separate interpreter per module (~90 of them) took 4 minutes on the shared
# 2-core machine. Results come back as JSON: module -> [exit code, last line of the error].
_FORK_EACH = r"""
import importlib, json, os, sys, traceback
for name in sys.argv[2:]:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.split(".")[0] == "micronet_lib"], "the parent must not import micronet_lib"
results, running = {}, {}

def reap():
    pid, status = os.wait()
    name, fd = running.pop(pid)
    with os.fdopen(fd) as pipe:
        results[name] = [os.waitstatus_to_exitcode(status), pipe.read()]

for name in json.loads(sys.argv[1]):
    while len(running) >= max(2, os.cpu_count() or 1):
        reap()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code, message = 0, ""
        except BaseException:
            code, message = 1, traceback.format_exc().strip().splitlines()[-1][:2000]
        os.write(w, message.encode())
        os._exit(code)
    os.close(w)
    running[pid] = (name, r)
while running:
    reap()
print(json.dumps(results))
"""
PRELOAD = ("numpy", "torch", "torchvision", "pandas", "PIL.Image")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone():
    # micronet_lib.__main__ runs the CLI when imported; micronet_lib.cli (which it calls) is imported.
    modules = [m for m in module_files(REPO) if not m.endswith(".__main__")]
    assert len(modules) > 50
    proc = subprocess.run([sys.executable, "-c", _FORK_EACH, json.dumps(modules), *PRELOAD], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(modules)
    failures = {m: err for m, (code, err) in results.items() if code}
    assert not failures, f"modules that fail to import on their own: {failures}"


def test_a_module_that_fails_alone_is_reported(tmp_path):
    _write(tmp_path, {"circ/__init__.py": "", "circ/a.py": "from circ.b import B\nA = 1\n",
                      "circ/b.py": "from circ.a import A\nB = 2\n", "circ/ok.py": "X = 1\n"})
    proc = subprocess.run([sys.executable, "-c", _FORK_EACH, json.dumps(["circ.a", "circ.ok"])], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["circ.ok"] == [0, ""]
    assert results["circ.a"][0] == 1 and "ImportError" in results["circ.a"][1] and "partially initialized" in results["circ.a"][1]


# ---------------------------------------------------------------------- layers (issue #30)
LAYOUT = REPO / "docs" / "layout.md"


def layer_order(text: str) -> dict[str, int]:
    """Unit -> height, from the ```layers block of docs/layout.md (top line = highest)."""
    block = text.split("```layers\n", 1)[1].split("```", 1)[0]
    lines = [line.split() for line in block.strip().splitlines() if line.strip()]
    return {unit: len(lines) - i for i, units in enumerate(lines) for unit in units}


def unit_of(module: str, order: dict[str, int]) -> str | None:
    """The longest unit of ``order`` that ``module`` (dotted, ``micronet_lib.`` stripped) is or lies in."""
    rel = module.split(".", 1)[1] if "." in module else ""
    parts = rel.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in order:
            return ".".join(parts[:n])
    return None


def test_every_module_has_a_layer_and_no_import_goes_up():
    order = layer_order(LAYOUT.read_text())
    modules = module_files(REPO)
    missing = sorted(m for m in modules if m != PACKAGE and unit_of(m, order) is None)
    assert not missing, f"{missing} belong to no unit of the ```layers block in docs/layout.md: add them there"
    upward = []
    for module, targets in import_graph(modules).items():
        here = unit_of(module, order)
        for target in targets:
            there = unit_of(target, order)
            if target == PACKAGE or here is None or there is None or there == here:
                continue
            if order[there] >= order[here]:
                upward.append((module, target))
    new = [f"{m} -> {t} ({unit_of(m, order)} imports {unit_of(t, order)}, not below it)" for m, t in sorted(set(upward))]
    assert not new, "imports that do not go down the layers of docs/layout.md:\n" + "\n".join(new)


def test_the_layer_check_sees_an_upward_lazy_import():
    order = layer_order("```layers\ntop\nlow.part\nbottom\n```\n")
    assert order == {"top": 3, "low.part": 2, "bottom": 1}
    assert unit_of("micronet_lib.low.part.x", order) == "low.part" and unit_of("micronet_lib.low.other", order) is None


# ---------------------------------------------------------------------- imports at the top (issue #30)
# A project import inside a function hides the import graph from a reader: imports go at the top of the
# module. Inside functions stay only: optional third-party dependencies (Ray, Jupyter, papermill, ipywidgets,
# the compiler ...: not project imports, not counted here), and the command modules of ``micronet_lib.cli``,
# which import their library only when their command runs, so ``micronet --help`` starts without it.
LAZY_PACKAGES = ("micronet_lib.cli",)


def function_level_project_imports(modules: dict[str, Path]) -> dict[str, int]:
    """Module -> number of ``micronet_lib`` imports inside its functions (one in a nested function counts once)."""
    out = {}
    for module, path in modules.items():
        inside = set()
        for fn in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE)):
                        inside.add(node)
                    elif isinstance(node, ast.Import) and any(a.name.startswith(PACKAGE) for a in node.names):
                        inside.add(node)
        if inside:
            out[module] = len(inside)
    return out


def test_project_imports_sit_at_the_top_of_their_module():
    found = {m: n for m, n in function_level_project_imports(module_files(REPO)).items()
             if not m.startswith(LAZY_PACKAGES)}
    assert not found, f"project imports inside functions (move them to the top of the module): {found}"


def test_the_lazy_import_count_sees_nested_and_relative_imports(tmp_path):
    _write(tmp_path, {"micronet_lib/__init__.py": "", "micronet_lib/a.py": "import os\nfrom micronet_lib import b\n",
                      "micronet_lib/b.py": "def f():\n    import json\n    def g():\n        from . import a\n    return g\n"})
    assert function_level_project_imports(module_files(tmp_path)) == {"micronet_lib.b": 1}
