"""Export throughput: Label Studio JSON export of N synthetic tasks → RRSIS and COCO, against label-studio-sdk.

    .venv/bin/python bench/export_speed.py [--tasks 10000] [--size 512] [--baseline-sample 0]

What it prints:
  * the time and throughput (tasks/s, masks/s) of ``pslg export rrsis`` and ``pslg export coco`` on the
    export (run as child processes, so their peak RSS is their own; the same export at N/10 tasks is also
    exported to show that peak memory does not grow with the export size: streaming);
  * the baseline, label-studio-sdk's brush decoding of the same masks (``converter.brush.decode_rle`` →
    H×W×4 → alpha > 0, what its own converters do), and our decoder on the same masks;
  * the ratios, all measured in this run on this machine.

The synthetic export has one task per (object, expression), the RRSIS-D set-up: 4 tasks per image, each
image a distinct file (``--size`` px squared), masks from ``annotate.synthetic.make_scene``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


CHILD = """
import sys
from converters.cli.main import app
sys.argv = ["pslg", "export", *sys.argv[1:]]
try:
    app()
finally:  # VmHWM is this process's own peak RSS (ru_maxrss would include the parent's at fork time)
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    open(HWM, "w").write(hwm)
"""


def run_export(kind: str, export: Path, out: Path) -> tuple[float, int]:
    """Run ``pslg export KIND`` in a child process; (seconds, peak RSS in MiB of that child)."""
    hwm = out.parent / f".{out.name}.hwm"
    code = f"HWM = {str(hwm)!r}\n" + CHILD
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, kind, str(export), "--out", str(out), "--image-root",
                           str(export.parent)], cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"export {kind} failed:\n{proc.stdout}{proc.stderr}")
    return dt, int(hwm.read_text()) // 1024


def regions_of(export: Path) -> list[dict]:
    with open(export) as fh:
        tasks = json.load(fh)
    return [r for t in tasks for a in t["annotations"] for r in a["result"] if r["type"] == "brushlabels"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--baseline-sample", type=int, default=0,
                    help="decode only this many masks with the sdk (0 = all) and scale the time to all")
    args = ap.parse_args()

    from converters.labelstudio.brush import brush_rle_decode
    from converters.synthetic_export import write_synthetic_export
    from label_studio_sdk.converter.brush import decode_rle

    per_image = 4
    with tempfile.TemporaryDirectory(prefix="pslg-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        big, _ = write_synthetic_export(tmp / "big", n_images=args.tasks // per_image, tasks_per_image=per_image,
                                        size=args.size, repeat_scenes=64)
        small, _ = write_synthetic_export(tmp / "small", n_images=max(1, args.tasks // 10 // per_image),
                                          tasks_per_image=per_image, size=args.size, repeat_scenes=64)
        print(f"synthetic export: {args.tasks} tasks, {args.tasks // per_image} images of {args.size}x{args.size}, "
              f"{big.stat().st_size / 2**20:.1f} MiB JSON (made in {time.perf_counter() - t0:.1f} s)")

        results = {}
        for kind in ("rrsis", "coco"):
            dt_small, rss_small = run_export(kind, small, tmp / f"{kind}-small")
            dt, rss = run_export(kind, big, tmp / f"{kind}-big")
            results[kind] = dt
            n_small = max(1, args.tasks // 10 // per_image) * per_image
            marginal = (args.tasks - n_small) / max(dt - dt_small, 1e-9)
            print(f"pslg export {kind:5s}: {dt:7.2f} s  {args.tasks / dt:8.1f} tasks/s  peak RSS {rss} MiB "
                  f"(at {n_small} tasks: {dt_small:.2f} s, peak RSS {rss_small} MiB; marginal "
                  f"{marginal:.1f} tasks/s without process start-up)")

        regions = regions_of(big)
        n = len(regions)
        t0 = time.perf_counter()
        for r in regions:
            brush_rle_decode(r["value"]["rle"], r["original_height"], r["original_width"])
        ours = time.perf_counter() - t0
        sample = regions if args.baseline_sample <= 0 else regions[: args.baseline_sample]
        t0 = time.perf_counter()
        for r in sample:
            decode_rle(r["value"]["rle"]).reshape(r["original_height"], r["original_width"], 4)[:, :, 3] > 0
        sdk = (time.perf_counter() - t0) * n / len(sample)
        scaled = "" if len(sample) == n else f" (measured on {len(sample)}, scaled to {n})"
        print(f"label-studio-sdk decode_rle, {n} masks: {sdk:7.2f} s  {n / sdk:8.1f} masks/s{scaled}")
        print(f"converters.labelstudio.brush.brush_rle_decode, {n} masks: {ours:7.2f} s  {n / ours:8.1f} masks/s")
        print(f"ratio decode only (sdk time / ours): {sdk / ours:.1f}x")
        for kind, dt in results.items():
            print(f"ratio full export {kind} (incl. image copy, RLE encode, JSON, process start) vs sdk decode "
                  f"alone: {sdk / dt:.2f}x")
        print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, self peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()
