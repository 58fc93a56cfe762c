"""Interactive-request load on the ML backend: p50/p95 latency and throughput at 1, 4 and 16 concurrent clients.

Starts ``pslg serve`` (gunicorn, 1 worker, 16 threads) on 127.0.0.1 with the image served as a Label Studio
local file, sends one cold interactive request (image fetch + decode + per-image work such as SAM's encoder: the
baseline), then interactive keypoint clicks on the same (now cached) image from 1, 4 and 16 clients, and prints a
table. Ratios compare each level's p50 with the cold request measured in the same run.

    .venv/bin/python bench/backend_load.py                        # weights-free classical segmenter
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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = """<View><Image name="image" value="$image"/><Text name="expression" value="$expression"/>
<BrushLabels name="mask" toName="image"><Label value="vehicle"/><Label value="building"/><Label value="storage_tank"/>
<Label value="roundabout"/></BrushLabels><KeyPointLabels name="clicks" toName="image" smart="true">
<Label value="vehicle"/></KeyPointLabels></View>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="synthetic image side in pixels")
    parser.add_argument("--image", type=Path, help="use this image instead of a synthetic scene")
    parser.add_argument("--requests", type=int, default=48, help="clicks per concurrency level")
    parser.add_argument("--levels", default="1,4,16")
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

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PSLG_SAM", "PSLG_GROUNDING"))}
    env.update({"MODEL_DIR": str(work / "model"), "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
                "PSLG_DEVICE": args.device, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)})
    segmenter = "classical"
    if args.random_sam:
        import torch
        from segment_anything import sam_model_registry

        ckpt = work / f"random_{args.random_sam}.pth"
        torch.save(sam_model_registry[args.random_sam](checkpoint=None).state_dict(), ckpt)
        env.update({"PSLG_SAM_CHECKPOINT": str(ckpt), "PSLG_SAM_MODEL_TYPE": args.random_sam})
        segmenter = f"SAM {args.random_sam} (random weights)"
    elif args.sam_checkpoint:
        env["PSLG_SAM_CHECKPOINT"] = args.sam_checkpoint
        segmenter = f"SAM {args.sam_checkpoint}"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--threads", "16"], cwd=str(REPO), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(work / "backend.log", "wb"))
    try:
        t0 = time.perf_counter()
        while True:
            try:
                health = requests.get(f"{url}/health", timeout=2).json()
                if health.get("ready"):
                    break
                if health.get("models") == "error":
                    raise SystemExit(f"backend failed to load: {health.get('error')}")
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit(f"backend did not start; log: {(work / 'backend.log').read_text()[-2000:]}")
            time.sleep(0.2)
        ready_s = time.perf_counter() - t0

        task = {"id": 1, "data": {"image": "/data/local-files/?d=bench/img.png", "expression": "the vehicle"}}
        rng = np.random.default_rng(0)
        x0, y0, x1, y1 = box

        def body() -> dict:
            x, y = rng.uniform(x0 + 1, x1 - 1), rng.uniform(y0 + 1, y1 - 1)
            ctx = {"result": [{"type": "keypointlabels", "original_width": w, "original_height": h, "is_positive": True,
                               "value": {"x": 100 * x / w, "y": 100 * y / h, "keypointlabels": ["vehicle"]}}]}
            return {"tasks": [task], "label_config": CONFIG, "project": "1.1", "params": {"context": ctx}}

        def one(session: requests.Session, payload: dict) -> float:
            t = time.perf_counter()
            r = session.post(f"{url}/predict", json=payload, timeout=600)
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            result = r.json()["results"][0]["result"]
            if not result:
                raise SystemExit(f"empty interactive result; log: {(work / 'backend.log').read_text()[-2000:]}")
            return elapsed

        cold = one(requests.Session(), body())
        rows = []
        for level in [int(v) for v in args.levels.split(",")]:
            payloads = [body() for _ in range(args.requests)]
            latencies: list[float] = []
            lock = threading.Lock()
            index = {"i": 0}

            def client() -> None:
                s = requests.Session()
                while True:
                    with lock:
                        if index["i"] >= len(payloads):
                            return
                        p = payloads[index["i"]]
                        index["i"] += 1
                    lat = one(s, p)
                    with lock:
                        latencies.append(lat)

            t = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(level)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            rows.append((level, len(latencies), percentile(latencies, 50), percentile(latencies, 95), len(latencies) / wall))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    print(f"backend_load: {segmenter}, image {w}x{h}, device {args.device}, nproc {os.cpu_count()}, CPU {cpu}")
    print(f"model_version {health.get('model_version')}")
    print(f"models ready after {ready_s:.1f} s; cold interactive request (fetch + decode + per-image work): {cold * 1000:.0f} ms")
    print(f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7} {'cold/p50':>8}")
    for level, n, p50, p95, rps in rows:
        print(f"{level:>7} {n:>8} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f} {rps:>7.1f} {cold / p50:>8.1f}x")


if __name__ == "__main__":
    main()
