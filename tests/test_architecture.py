"""The layering rules of docs/architecture.md, and the registry as the single source of stage wiring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.stages.registry import STAGES, code_files, config_sections, makefile_rules
from pipeline.stamps import SECTIONS
from tests.conftest import REPO

PKG = REPO / "pipeline"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported pipeline module, line, at module top level) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            mods = [node.module] if node.module != "pipeline" else [f"pipeline.{a.name}" for a in node.names]
            out += [(m, node.lineno, id(node) in top) for m in mods]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names if a.name.startswith("pipeline")]
    return out


def _files(layer: str) -> list[Path]:
    return sorted((PKG / layer).rglob("*.py"))


@pytest.mark.parametrize("path", _files("methods"), ids=lambda p: p.name)
def test_methods_import_no_config_io_stage_or_cli(path: Path) -> None:
    forbidden = (
        "pipeline.config",
        "pipeline.io",
        "pipeline.stages",
        "pipeline.cli",
        "pipeline.demo",
        "pipeline.plots",
        "pipeline.stamps",
        "pipeline.parallel",
    )
    bad = [(m, line) for m, line, _ in _imports(path) if m.startswith(forbidden)]
    assert not bad, f"{path.name} imports {bad}: methods take arrays, frames and option objects only"


@pytest.mark.parametrize("path", _files("stages"), ids=lambda p: p.name)
def test_stages_import_no_other_stage_cli_or_demo(path: Path) -> None:
    own = f"pipeline.stages.{path.stem}"
    shared = ("pipeline.stages.registry", "pipeline.stages.context")
    bad = [
        (m, line)
        for m, line, _ in _imports(path)
        if (m.startswith("pipeline.stages.") and m not in shared and m != own)
        or m.startswith(("pipeline.cli", "pipeline.demo"))
    ]
    assert not bad, f"{path.name} imports {bad}: a stage reads other stages' outputs through the registry"


@pytest.mark.parametrize("path", [*_files("readers"), *_files("plots")], ids=lambda p: p.name)
def test_readers_and_plots_import_no_stage(path: Path) -> None:
    bad = [(m, line) for m, line, _ in _imports(path) if m.startswith(("pipeline.stages", "pipeline.cli"))]
    assert not bad, f"{path.name} imports {bad}"


def test_demo_is_imported_only_by_the_cli_and_itself() -> None:
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "cli.py" or "demo" in path.relative_to(PKG).parts:
            continue
        bad = [m for m, _, _ in _imports(path) if m.startswith("pipeline.demo")]
        assert not bad, f"{path} imports the demo generator"


def test_package_imports_are_at_the_top() -> None:
    hidden = [
        (str(p.relative_to(REPO)), line, m)
        for p in sorted(PKG.rglob("*.py"))
        for m, line, top in _imports(p)
        if not top
    ]
    assert not hidden, f"in-function imports of the package's own modules: {hidden}"


def test_no_pyplot_or_backend_switch_in_the_package() -> None:
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "matplotlib.use(" not in text, path
        assert "import matplotlib.pyplot" not in text, path


def test_makefile_rules_match_the_registry() -> None:
    committed = (REPO / "stages.mk").read_text(encoding="utf-8")
    assert committed == makefile_rules(), "stages.mk is stale: run `cropn2o makefile > stages.mk`"
    assert "include stages.mk" in (REPO / "Makefile").read_text(encoding="utf-8")


def test_registry_wiring_is_consistent() -> None:
    assert set(SECTIONS) == set(config_sections())
    for st in STAGES.values():
        for ref in st.reads:
            producer, _, output = ref.partition(".")
            assert output in STAGES[producer].writes, ref
        assert st.module.startswith(("pipeline.stages.", "pipeline.demo")), st.module
        assert any(
            f.endswith(st.module.split(".")[-1] + ".py") or f.endswith("__init__.py") for f in code_files(st.module)
        )


def test_code_files_follow_imports() -> None:
    files = code_files("pipeline.stages.fit")
    assert "pipeline/methods/fitting.py" in files and "pipeline/plots/fit.py" in files
    assert "pipeline/methods/gridding.py" not in files
