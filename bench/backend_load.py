"""Load on the ML backend: p50/p95 latency and throughput at 1, 4 and 16 concurrent clients, per worker count.

Starts ``pslg serve`` (gunicorn, 1 worker, 16 threads) on 127.0.0.1 with images served as Label Studio local
files, once per ``--workers`` value (``PSLG_WORKERS``: inference processes; 1 = everything in the server
process, the behaviour before the inference pool). For each it sends one cold interactive request (image fetch
+ decode + per-image work such as SAM's encoder), then interactive keypoint clicks on the same (now cached)
image from 1, 4 and 16 clients, then batch ``/predict`` requests (``--batch-tasks`` tasks on as many images,
rotating over more images than the backend caches, so mostly fresh) from the same numbers of clients. The
table shows each level's req/s (tasks/s for batches) and its ratio to the first ``--workers`` value, same run.

    .venv/bin/python bench/backend_load.py                        # weights-free classical segmenter, 1 vs 2 workers
    .venv/bin/python bench/backend_load.py --workers 1,4 --requests 96   # a 4-core machine
    .venv/bin/python bench/backend_load.py --random-sam vit_b      # real SAM ViT-B architecture, random weights
    .venv/bin/python bench/backend_load.py --sam-checkpoint sam_vit_b_01ec64.pth --device auto   # GPU if present
    PSLG_USE_MBO=off .venv/bin/python bench/backend_load.py --random-sam vit_b   # isolate the decoder cost

MBO's graph-cut cost grows with the mask's size and random SAM weights give masks unrelated to the object, so
MBO-on timings with random weights are not representative: the MBO-off run shows the embedding-cache path itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from proctree_cpu import TreeCPU
from serving import serve

from annotate.geometry import pixels_to_percent_point

REPO = Path(__file__).resolve().parents[1]

CONFIG = """<View><Image name="image" value="$image"/><Text name="expression" value="$expression"/>
<BrushLabels name="mask" toName="image"><Label value="vehicle"/><Label value="building"/><Label value="storage_tank"/>
<Label value="roundabout"/></BrushLabels><KeyPointLabels name="clicks" toName="image" smart="true">
<Label value="vehicle"/></KeyPointLabels></View>"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load(url: str, payloads: list[dict], clients: int, check) -> tuple[list[float], float]:
    """Send ``payloads`` from ``clients`` threads; per-request latencies and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    index = {"i": 0}

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if index["i"] >= len(payloads):
                    return
                payload = payloads[index["i"]]
                index["i"] += 1
            t = time.perf_counter()
            r = session.post(f"{url}/predict", json=payload, timeout=600)
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            check(r.json())
            with lock:
                latencies.append(elapsed)

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="synthetic image side in pixels")
    parser.add_argument("--image", type=Path, help="use this image instead of a synthetic scene")
    parser.add_argument("--requests", type=int, default=48, help="clicks (and batch requests) per concurrency level")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="PSLG_WORKERS values to compare")
    parser.add_argument("--batch-tasks", type=int, default=4, help="tasks (one image each) per batch /predict; 0 = none")
    parser.add_argument("--sam-checkpoint", help="a SAM checkpoint (PSLG_SAM_CHECKPOINT)")
    parser.add_argument("--random-sam", choices=["vit_b", "vit_l", "vit_h"], help="build this SAM with random weights")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import cv2

    from annotate.synthetic import make_scene

    work = Path(tempfile.mkdtemp(prefix="pslg-bench-"))
    files = work / "files"
    (files / "bench").mkdir(parents=True)
    if args.image:
        from annotate.image_io import load_image

        rgb = load_image(args.image).rgb
        box = (rgb.shape[1] * 0.4, rgb.shape[0] * 0.4, rgb.shape[1] * 0.6, rgb.shape[0] * 0.6)
    else:
        scene = make_scene(seed=0, height=args.size, width=args.size, n_objects=6)
        rgb = scene.image
        box = scene.objects[0].box
    cv2.imwrite(str(files / "bench" / "img.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    h, w = rgb.shape[:2]
    # batch requests rotate over 48 scenes (the backend keeps 16 decoded images): mostly fresh images
    batch_images = []
    for i in range(48 if args.batch_tasks else 0):
        s = make_scene(seed=100 + i, height=args.size, width=args.size, n_objects=3)
        cv2.imwrite(str(files / "bench" / f"b{i}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        x0, y0, x1, y1 = s.objects[0].box
        batch_images.append((f"/data/local-files/?d=bench/b{i}.png", s.objects[0].expression, [x0, y0, x1 - x0, y1 - y0]))

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_SAM", "PSLG_GROUNDING", "PSLG_WORKERS"))}
    base_env.update({"MODEL_DIR": str(work / "model"), "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
                     "PSLG_DEVICE": args.device, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)})
    segmenter = "classical"
    if args.random_sam:
        import torch
        from segment_anything import sam_model_registry

        ckpt = work / f"random_{args.random_sam}.pth"
        torch.save(sam_model_registry[args.random_sam](checkpoint=None).state_dict(), ckpt)
        base_env.update({"PSLG_SAM_CHECKPOINT": str(ckpt), "PSLG_SAM_MODEL_TYPE": args.random_sam})
        segmenter = f"SAM {args.random_sam} (random weights)"
    elif args.sam_checkpoint:
        base_env["PSLG_SAM_CHECKPOINT"] = args.sam_checkpoint
        segmenter = f"SAM {args.sam_checkpoint}"

    task = {"id": 1, "data": {"image": "/data/local-files/?d=bench/img.png", "expression": "the vehicle"}}
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = box

    def click() -> dict:
        x, y = rng.uniform(x0 + 1, x1 - 1), rng.uniform(y0 + 1, y1 - 1)
        ctx = {"result": [{"type": "keypointlabels", "original_width": w, "original_height": h, "is_positive": True,
                           "value": {**pixels_to_percent_point((x, y), w, h), "keypointlabels": ["vehicle"]}}]}
        return {"tasks": [task], "label_config": CONFIG, "project": "1.1", "params": {"context": ctx}}

    batch_counter = {"i": 0}

    def batch() -> dict:
        tasks = []
        for _ in range(args.batch_tasks):
            image, expression, bbox = batch_images[batch_counter["i"] % len(batch_images)]
            batch_counter["i"] += 1
            tasks.append({"id": batch_counter["i"], "data": {"image": image, "expression": expression, "bbox": bbox}})
        return {"tasks": tasks, "label_config": CONFIG, "project": "1.1"}

    def check_nonempty(body: dict) -> None:
        if not all(r["result"] for r in body["results"]):
            raise SystemExit("an empty prediction: see the backend log in " + str(work))

    levels = [int(v) for v in args.levels.split(",")]
    runs = []  # (workers, ready_s, cold_s, health, [(kind, level, n, p50, p95, per_s, cores)])
    for workers in [int(v) for v in args.workers.split(",")]:
        env = dict(base_env, PSLG_WORKERS=str(workers))
        proc, url, health, ready_s = serve(env, work, f"w{workers}")
        cpu = TreeCPU(proc.pid).__enter__()  # the server and its inference processes

        def measured(kind: str, level: int, payloads: list[dict], per_request: int) -> tuple:
            before = cpu.seconds
            lat, wall = load(url, payloads, level, check_nonempty)
            time.sleep(2 * cpu.interval)  # let the sampler see the last requests' CPU
            cores = (cpu.seconds - before) / wall
            return (kind, level, len(lat), percentile(lat, 50), percentile(lat, 95), len(lat) * per_request / wall, cores)

        try:
            cold_lat, _ = load(url, [click()], 1, check_nonempty)
            rows = [measured("clicks", level, [click() for _ in range(args.requests)], 1) for level in levels]
            if args.batch_tasks:
                rows += [measured("batch", level, [batch() for _ in range(max(level, args.requests // 2))], args.batch_tasks)
                         for level in levels]
        finally:
            cpu.__exit__(None, None, None)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        runs.append((workers, ready_s, cold_lat[0], health, rows))

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    print(f"backend_load: {segmenter}, image {w}x{h}, device {args.device}, nproc {os.cpu_count()}, CPU {cpu}")
    print(f"model_version {runs[0][3].get('model_version')}; batch = {args.batch_tasks} tasks on as many images per request")
    print(f"load average at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores); cores = CPU seconds of the "
          "server's process tree / wall seconds of the level")
    base = {(row[0], row[1]): row[5] for row in runs[0][4]}
    print(f"{'workers':>7} {'kind':>6} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'per s':>7} "
          f"{'vs ' + str(runs[0][0]) + 'w':>7} {'cores':>5}")
    for workers, ready_s, cold, _, rows in runs:
        print(f"# PSLG_WORKERS={workers}: ready after {ready_s:.1f} s; cold interactive request {cold * 1000:.0f} ms")
        for kind, level, n, p50, p95, per_s, cores in rows:
            unit = "req/s" if kind == "clicks" else "tasks/s"
            print(f"{workers:>7} {kind:>6} {level:>7} {n:>8} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f} {per_s:>7.1f} "
                  f"{per_s / base[(kind, level)]:>6.2f}x {cores:>5.2f}  ({unit})")
    shutil.rmtree(work)  # kept when a run fails, for the backend logs


if __name__ == "__main__":
    main()
