"""Loading grounders from several threads at once (a backend's store poller, its trainer, a request) must work.

Without the loader's lock, transformers' ``from_pretrained`` in two threads leaves tied weights on the meta
device ("Cannot copy out of meta tensor"), and every later load in the process fails too.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from annotate.grounding import load_grounder
from annotate.grounding.training import load_trainable


def test_concurrent_loads_all_succeed_and_leave_the_process_usable(gdino_dir: Path) -> None:
    errors: list[str] = []

    def load(trainable: bool) -> None:
        for _ in range(2):
            try:
                if trainable:
                    load_trainable(str(gdino_dir))
                else:
                    load_grounder(gdino_dir, device="cpu")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=(i == 0,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    grounder = load_grounder(gdino_dir, device="cpu")
    candidates = grounder.ground(np.zeros((64, 64, 3), np.uint8), "the building in the center", top_k=1)
    assert len(candidates) == 1 and 0.0 <= candidates[0].score <= 1.0
