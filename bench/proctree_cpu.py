"""CPU seconds used by a process and all its descendants, sampled from /proc while they run (Linux).

Why: on a shared machine the wall-clock speed-up of N workers is bounded by the cores the scheduler actually
gives them. Benchmarks print the CPU seconds and the cores used (CPU s / wall s) next to their wall figures,
so a ratio below the core count can be told apart from a serial bottleneck.
"""

from __future__ import annotations

import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


class TreeCPU:
    """Samples every ``interval`` s; ``seconds`` sums each process's last sample (a process's final
    ``interval`` before it exits is missed, so figures are slight underestimates)."""

    def __init__(self, root_pid: int, interval: float = 0.1) -> None:
        self.root = root_pid
        self.interval = interval
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeCPU":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _stat(int(name))
                if st is not None:
                    stats[int(name)] = st
        tree = {self.root}
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree:
            if pid in stats:
                self._last[pid] = stats[pid][1]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self._last.values())
