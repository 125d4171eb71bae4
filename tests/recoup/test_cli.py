"""The command line: real processes, exit codes and one clear line on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import sample_rows, write_tables


def recoup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recoup.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )


@pytest.mark.slow
def test_import_export_and_failure(tmp_path: Path, database_url: str) -> None:
    env = {"RECOUP_DATABASE_URL": database_url, "RECOUP_VAR_DIR": str(tmp_path / "var")}
    good = write_tables(tmp_path / "good", sample_rows())
    done = recoup("import", str(good), env=env)
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout and "orders" in done.stdout

    tables = sample_rows(id_prefix="X-")
    tables["orders"][2]["channel"] = "telepathy"
    bad = write_tables(tmp_path / "bad", tables)
    failed = recoup("import", str(bad), env=env)
    assert failed.returncode == 1
    first = failed.stderr.strip().splitlines()[0]
    assert first.startswith("error: orders.csv row 3 (line 4), column 'channel': 'telepathy' is not one of")
    assert "Traceback" not in failed.stderr

    checked = recoup("check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("invariants hold")

    exported = recoup("export", str(tmp_path / "out"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "orders.csv").read_text().count("\n") == len(sample_rows()["orders"]) + 1


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    failed = recoup("import", str(tmp_path / "nowhere"), env={"RECOUP_VAR_DIR": str(tmp_path / "var")})
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: {tmp_path / 'nowhere'}: is not a directory"


def test_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = recoup("db", "upgrade", env={"RECOUP_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
