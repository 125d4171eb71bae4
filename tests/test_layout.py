"""The generic top-level package names must resolve to this repository, not to installed namesakes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("oms", "api", "features", "models", "pipelines", "dashboards", "simulator", "recoup")


@pytest.mark.parametrize("name", PACKAGES)
def test_package_resolves_inside_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == ROOT / name
    assert module.__doc__ and len(module.__doc__.strip()) > 20, (
        f"{name} needs a docstring saying what it owns"
    )


def test_analytics_packages_are_not_imported_by_oms() -> None:
    for path in (ROOT / "oms").rglob("*.py"):
        source = path.read_text()
        for forbidden in ("features", "models", "pipelines", "dashboards", "api"):
            assert f"from {forbidden}" not in source and f"import {forbidden}" not in source, (
                path,
                forbidden,
            )


def test_only_the_shell_imports_recoup() -> None:
    """`recoup` is the shell on top: the packages below it take settings from `oms.settings`."""
    for package in ("oms", "api", "features", "models", "pipelines", "dashboards", "simulator"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            assert "from recoup" not in source and "import recoup" not in source, path
