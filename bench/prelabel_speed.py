"""Pre-labelling throughput: `pslg prelabel` with 1 and N local workers and on a local Ray instance, against the
backend's batch ``/predict`` (what Label Studio's "Retrieve Predictions" sends), on the same tasks.

Tasks are synthetic (``annotate.synthetic.make_scene``: ``--images`` scenes of ``--size`` px with
``--tasks-per-image`` objects each, the task's own box as the prompt, weights-free segmenter), served as Label
Studio local files from a temporary folder, so no server is needed for the images. Every mode runs as its own
process from a cold start (imports, model loading, worker start-up included), and each mode's output is checked
to hold one non-empty prediction per task. Ratios are against ``pslg prelabel --workers 1`` in the same run.

    .venv/bin/python bench/prelabel_speed.py                    # 500 tasks: 100 images × 5, 256 px
    .venv/bin/python bench/prelabel_speed.py --no-ray --workers 4

The backend rows send all tasks in one ``/predict`` request, as "Retrieve Predictions" on a selection does,
to ``pslg serve`` with ``PSLG_WORKERS=1`` (one process) and ``PSLG_WORKERS=N`` (the inference pool).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from proctree_cpu import TreeCPU
from serving import free_port

REPO = Path(__file__).resolve().parents[1]


def make_tasks(root: Path, images: int, per_image: int, size: int) -> list[dict]:
    import cv2

    from annotate.synthetic import make_scene

    tasks = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        scene = make_scene(seed=i, height=size, width=size, n_objects=per_image)
        cv2.imwrite(str(root / "img" / f"{i}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        for obj in scene.objects[:per_image]:
            x0, y0, x1, y1 = obj.box
            tasks.append({"id": len(tasks) + 1, "data": {"image": f"/data/local-files/?d=img/{i}.png",
                                                         "expression": obj.expression, "bbox": [x0, y0, x1 - x0, y1 - y0]}})
    return tasks


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_"))}
    env.update({"PYTHONPATH": str(REPO), "LOG_LEVEL": "WARNING", **extra})
    return env


def check(predictions: list[list[dict]], n: int, what: str) -> None:
    """One prediction with a non-empty brush per task, or the bench is measuring failures."""
    if len(predictions) != n or not all(len(p) == 1 and p[0]["result"] for p in predictions):
        raise SystemExit(f"{what}: expected one non-empty prediction for each of {n} tasks")


def run_prelabel(tasks_json: Path, root: Path, work: Path, tag: str, extra: list[str], n: int) -> tuple[float, float, float]:
    """Cold-start wall seconds, the job's own seconds once its workers had loaded the models, CPU seconds."""
    out = work / f"out-{tag}.json"
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "prelabel", str(tasks_json), "--out", str(out),
                             "--local-files-root", str(root), *extra], cwd=str(REPO), env=clean_env(COLUMNS="200"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreeCPU(proc.pid) as cpu:
        output, _ = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"pslg prelabel {tag} failed: {output[-3000:]}")
    check([task.get("predictions", []) for task in json.loads(out.read_text())], n, f"prelabel {tag}")
    found = re.search(r"predicted, .* in ([0-9.]+) s \(", output.replace("\n", " "))
    if found is None:
        raise SystemExit(f"pslg prelabel {tag}: no summary line in its output")
    return wall, float(found.group(1)), cpu.seconds


def run_backend(tasks: list[dict], root: Path, work: Path, workers: int) -> tuple[float, float, float]:
    """Cold-start wall seconds, the seconds of the /predict request itself (models loaded), CPU seconds."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = (REPO / "converters" / "configs" / "rrsis_expression_per_task.xml").read_text()
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--threads", "4"], cwd=str(REPO),
                            env=clean_env(MODEL_DIR=str(work / f"model-{workers}"), PSLG_WORKERS=str(workers),
                                          LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root)),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = TreeCPU(proc.pid).__enter__()
    try:
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).json().get("ready"):
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.perf_counter() - t > 300:
                raise SystemExit("pslg serve did not start")
            time.sleep(0.2)
        t_request = time.perf_counter()
        r = requests.post(f"{url}/predict", json={"tasks": tasks, "label_config": config, "project": "1.1"}, timeout=3600)
        r.raise_for_status()
        wall = time.perf_counter() - t
        request_s = time.perf_counter() - t_request
        check([[p] for p in r.json()["results"]], len(tasks), f"backend PSLG_WORKERS={workers}")
        return wall, request_s, cpu.seconds
    finally:
        cpu.__exit__(None, None, None)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--tasks-per-image", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N of the multi-worker rows")
    parser.add_argument("--no-ray", action="store_true", help="skip the local Ray row")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pslg-prelabel-bench-"))
    root = work / "files"
    tasks = make_tasks(root, args.images, args.tasks_per_image, args.size)
    tasks_json = work / "tasks.json"
    tasks_json.write_text(json.dumps(tasks))
    n = len(tasks)

    rows = [("pslg prelabel --workers 1", run_prelabel(tasks_json, root, work, "w1", ["--workers", "1"], n))]
    rows.append((f"pslg prelabel --workers {args.workers}",
                 run_prelabel(tasks_json, root, work, f"w{args.workers}", ["--workers", str(args.workers)], n)))
    if not args.no_ray:
        rows.append((f"pslg prelabel --ray local ({args.workers} actors)",
                     run_prelabel(tasks_json, root, work, "ray", ["--ray", "local", "--ray-actors", str(args.workers)], n)))
    rows.append(("backend /predict, PSLG_WORKERS=1", run_backend(tasks, root, work, 1)))
    rows.append((f"backend /predict, PSLG_WORKERS={args.workers}", run_backend(tasks, root, work, args.workers)))
    shutil.rmtree(work)  # kept when a mode fails, for its output

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"prelabel_speed: {n} synthetic tasks ({args.images} images × {args.tasks_per_image}, {args.size} px), "
          f"classical segmenter, nproc {os.cpu_count()}, CPU {cpu}")
    print("cold = process start to last prediction stored (imports, model and worker start-up included); "
          "warm = once the models are loaded; CPU s = the mode's process tree, cores = CPU s / cold s")
    print(f"load average at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    base_cold, base_warm, _ = rows[0][1]
    print(f"{'mode':<44} {'cold s':>7} {'tasks/s':>8} {'ratio':>6} {'warm s':>7} {'tasks/s':>8} {'ratio':>6} "
          f"{'CPU s':>6} {'cores':>5}")
    for mode, (cold, warm, cpu) in rows:
        print(f"{mode:<44} {cold:>7.1f} {n / cold:>8.1f} {base_cold / cold:>5.2f}x {warm:>7.1f} {n / warm:>8.1f} "
              f"{base_warm / warm:>5.2f}x {cpu:>6.1f} {cpu / cold:>5.2f}")


if __name__ == "__main__":
    main()
