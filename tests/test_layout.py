"""The repository's shape rules (the redesign issue, item 8): no module over 400 lines, no import
cycles between our modules, the core imports nothing from exporter/ or targets/, and nothing
probes a target with hasattr/getattr."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the import name of each top-level folder (setup.py's ROOTS)
FOLDERS = {"slmpack": "slmpack", "exporter": "slmpack.exporter", "calibration": "slmpack.calibration",
           "targets": "slmpack.targets", "device_tests": "slmpack.device_tests", "bench": "bench"}
SOURCE = (*FOLDERS, "bench", "scripts", "tests", "integrations")
# front ends of the core: they drive an export, so they may reach into exporter/ and targets/
FRONT_ENDS = ("slmpack/api.py", "slmpack/cli.py", "slmpack/cli_devices.py", "slmpack/build/")


def modules() -> dict[str, Path]:
    out = {}
    for folder, name in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


def imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """Absolute names ``path`` imports (``from a import b`` yields ``a.b`` and ``a``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:   # also imports under a module-level ``if``/``try`` (not TYPE_CHECKING)
        nodes = [n for stmt in tree.body for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 and not (isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test))]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                base = ".".join(up + ([n.module] if n.module else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in n.names}
    return out


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for folder in SOURCE for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_core_imports_nothing_from_exporter_or_targets():
    bad = []
    for name, path in modules().items():
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith("slmpack/") or rel.startswith(FRONT_ENDS):
            continue
        for imp in imports(path, name, top_level_only=False):
            if imp.startswith(("slmpack.exporter", "slmpack.targets")):
                bad.append((rel, imp))
    assert not bad, bad


def test_no_import_cycles_between_modules():
    mods = modules()
    # an edge to one's own ancestor package is not a cycle: Python initialises parents first
    graph = {m: {i for i in imports(p, m, top_level_only=True) if i in mods and not m.startswith(i)}
             for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles[:5]


def test_nothing_probes_a_target_with_hasattr_or_getattr():
    probe = re.compile(r"\b(hasattr|getattr)\(\s*(target|job\.target|self\.target)\b")
    hits = [f"{p.relative_to(ROOT)}:{i}" for folder in ("slmpack", "exporter", "targets")
            for p in (ROOT / folder).rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if probe.search(line)]
    assert not hits, hits


def test_the_rules_see_the_tree():
    """The checks above would pass vacuously on an empty walk."""
    mods = modules()
    assert len(mods) > 100 and "slmpack.exporter.pipeline" in mods
    assert "slmpack.runtime.ladder" in imports(mods["slmpack.validation"], "slmpack.validation", True)


def test_only_the_pipeline_runs_the_reference():
    """Targets declare the inputs they want reference logits for (``reference_requests``); the
    pipeline runs the reference on them. No target imports the reference runner."""
    bad = [(p.relative_to(ROOT).as_posix(), i) for name, p in modules().items() if name.startswith("slmpack.targets")
           for i in imports(p, name, top_level_only=False) if i.startswith("slmpack.exporter.reference_runner")]
    assert not bad, bad
