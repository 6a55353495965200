"""The package layering: the CLI sits on top, the product never needs the repository's bench/, and modules
share only public names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("alignment", "reward", "data_builders")  # the installed packages
PACKAGES = (*PRODUCT, "bench")


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, imported names)`` of every ``import`` and ``from ... import`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, []) for a in node.names)
    return found


def sources(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def test_nothing_below_the_cli_imports_it():
    cli = ROOT / "alignment" / "cli"
    allowed = {ROOT / "alignment" / "__main__.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources()
        if cli not in path.parents and path not in allowed
        for line, module, names in imports(path)
        if module == "alignment.cli" or module.startswith("alignment.cli.")
    ]
    assert not offenders, "modules outside alignment/cli import the CLI:\n" + "\n".join(offenders)


def test_the_installed_product_does_not_import_bench():
    """bench/ is repository tooling, not installed: a product module importing it breaks in a wheel."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources(PRODUCT)
        for line, module, names in imports(path)
        if module == "bench" or module.startswith("bench.")
    ]
    assert not offenders, "product modules import bench/:\n" + "\n".join(offenders)


def test_no_private_name_is_imported_from_another_module():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: from {module} import {name}"
        for path in sources()
        for line, module, names in imports(path)
        if module != "__future__"
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not offenders, "private names cross modules:\n" + "\n".join(offenders)
