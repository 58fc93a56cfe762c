"""SIGTERM (a scheduler, `timeout`) to a long command: it says "interrupted" and exits 130, never silently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cli import write_rrsis_dataset

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_during_eval_says_interrupted(tmp_path: Path) -> None:
    data = write_rrsis_dataset(tmp_path, {"test": 400}, size=160)
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "eval", "--data", str(data), "--oracle-box",
                             "--no-progress", "--out", str(tmp_path / "report.json")], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(5)  # imports done, refs being scored (400 refs take well over 10 s on 2 cores)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out[-1000:], err[-2000:])
    assert "interrupted: nothing written" in err and "Traceback" not in err
    assert not (tmp_path / "report.json").exists()
