"""The release path: ``python -m build`` makes an sdist and a wheel; the wheel, installed into a fresh venv, works.

The fresh venv gets only the wheel (``pip install --no-deps --no-index``); the dependencies are this test
environment's, put on the new venv's path, so the test runs offline and installs no torch. CI's
lowest-versions job (``.ci/lowest``) installs the same kind of wheel with its dependencies from the registry.
Both run ``.ci/smoke_installed.py``: ``pslg --version``, ``pslg segment`` on a generated image, ``pslg serve``'s
``/health``, with the toolkit imported from the venv, never from the clone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_built_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    pytest.importorskip("build")  # the [dev] extra; CI's set-up installs it
    # nothing may point back at the clone (a PYTHONPATH to it would show the source tree as installed)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dist = tmp_path / "dist"
    # --no-isolation: the build backend (setuptools) comes from this environment, so no download is needed
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=600, env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "converters/configs/rrsis_expression_per_task.xml" in names  # package data the backend reads
    assert any(n.endswith("entry_points.txt") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    members = tarfile.open(sdists[0]).getnames()
    assert any(m.endswith("/pyproject.toml") for m in members) and any(m.endswith("/README.md") for m in members)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
                               capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # the dependencies: this environment's site-packages, after the venv's own (so the wheel's code wins)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, env=env).stdout.strip()
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "zz_test_dependencies.pth").write_text("\n".join(paths) + "\n")

    smoke = subprocess.run([str(python), str(REPO / ".ci" / "smoke_installed.py"), str(tmp_path / "work")],
                           capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    assert "smoke: all checks passed" in smoke.stdout
    assert str(venv) in smoke.stdout.split("annotate imported from", 1)[1].splitlines()[0]
