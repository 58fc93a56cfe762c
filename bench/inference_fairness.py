"""How long an interactive click waits while another request runs a batch: per-prompt FIFO lock vs whole-batch lock.

The backend's engine takes its inference lock per prompt, first come first served (``backend.scheduling``).
The baseline, measured in the same run, holds one lock across the whole batch (what the engine did before).
One thread sends batches of ``--batch`` whole-image boxes on a synthetic scene (the slow case for the
classical segmenter); another sends ``--clicks`` single-box clicks, one after the other, and the click latency
is recorded. Bounded by counts, not time.

    .venv/bin/python bench/inference_fairness.py [--size 1024] [--batch 8] [--clicks 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from typing import Optional, Sequence

from annotate.factory import build_pipeline
from annotate.synthetic import make_scene
from annotate.types import Prompt, PromptResult
from backend.config import Settings
from backend.engine import Engine


class WholeBatchEngine(Engine):
    """The baseline: one lock held across all prompts of a request."""

    _batch_lock = threading.Lock()

    def _run_fairly(self, pipeline, image, prompts: Sequence[Prompt], image_key: Optional[str]) -> list[PromptResult]:
        with self._batch_lock:
            return pipeline.run(image, prompts, image_key=image_key)


def measure(engine: Engine, scene, batch: int, clicks: int) -> tuple[list[float], float]:
    """Click latencies (s) while batches run continuously, and the batch prompts' mean time (s)."""
    h, w = scene.image.shape[:2]
    whole = Prompt(box=(0.0, 0.0, float(w), float(h)))
    click = Prompt(box=scene.objects[0].box)
    stop = threading.Event()
    batch_times: list[float] = []

    def batches() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            engine.run(scene.image, [whole] * batch, "scene")
            batch_times.append((time.perf_counter() - t) / batch)

    worker = threading.Thread(target=batches, daemon=True)
    worker.start()
    time.sleep(0.2)
    latencies = []
    for _ in range(clicks):
        t = time.perf_counter()
        [answer] = engine.run(scene.image, [click], "scene")
        latencies.append(time.perf_counter() - t)
        assert answer.ok, answer.error
    stop.set()
    worker.join()
    return latencies, statistics.mean(batch_times) if batch_times else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="side of the synthetic scene (pixels)")
    ap.add_argument("--batch", type=int, default=8, help="whole-image boxes per batch request")
    ap.add_argument("--clicks", type=int, default=12, help="clicks measured per variant")
    args = ap.parse_args()

    scene = make_scene(seed=3, height=args.size, width=args.size, n_objects=3)
    settings = Settings(inference_budget_s=0)  # the engine is given its loader: no model store, no MODEL_DIR
    rows = []
    for name, cls in (("whole-batch lock (before)", WholeBatchEngine), ("per-prompt FIFO lock", Engine)):
        engine = cls(settings, loader=lambda: build_pipeline()).start()
        assert engine.wait_ready(120), engine.error
        latencies, per_prompt = measure(engine, scene, args.batch, args.clicks)
        rows.append((name, statistics.median(latencies), max(latencies), per_prompt))
    print(f"# inference_fairness {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; scene {args.size}², batch {args.batch} whole-image boxes, {args.clicks} clicks")
    print(f"{'variant':28} {'click p50 s':>12} {'click max s':>12} {'batch s/prompt':>15}")
    for name, p50, worst, per_prompt in rows:
        print(f"{name:28} {p50:12.3f} {worst:12.3f} {per_prompt:15.3f}")
    base, fair = rows[0], rows[1]
    print(f"click p50 ratio (before / now): {base[1] / fair[1]:.1f}x; max: {base[2] / fair[2]:.1f}x; "
          f"batch cost per prompt now / before: {fair[3] / base[3]:.2f}")


if __name__ == "__main__":
    main()
