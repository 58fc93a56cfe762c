"""Run a reproduction in a child Python: a segfault or an out-of-memory kill there fails the test, not the session.

The child prints one JSON line as its last line; its peak resident set (``VmHWM``) is added under
``"peak_rss"`` (bytes), so a test can bound what an input costs in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a child of a large pytest would report its
# parent's high-water mark; VmHWM belongs to the child's own address space
_EPILOGUE = """
import json as _json, re as _re
_status = open("/proc/self/status").read()
_result["peak_rss"] = int(_re.search(r"VmHWM:\\s+(\\d+) kB", _status).group(1)) * 1024
print(_json.dumps(_result))
"""


def run_isolated(code: str, *, timeout: float = 300, memory_limit: int = 6 * 1024**3) -> dict[str, Any]:
    """Run ``code`` (which must fill a dict named ``_result``) in a fresh interpreter with this checkout first on
    the path and its address space capped at ``memory_limit`` bytes (so a bomb fails fast instead of swapping).

    Returns the child's ``_result`` with ``peak_rss``; raises ``AssertionError`` with its stderr when the child
    dies (a signal such as SIGSEGV gives a negative return code) or prints no result.
    """
    prologue = (f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({int(memory_limit)}, {int(memory_limit)}))\n"
                "_result = {}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code) + _EPILOGUE], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"the child exited with {proc.returncode}:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the child printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return json.loads(lines[-1])
