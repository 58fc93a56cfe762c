"""Large-scene tiling (memory, throughput) and seam-merge correctness of the geo export.

    .venv/bin/python bench/geo_tiling.py [--side 20000] [--tile 1024] [--overlap 128] [--objects 60]

What it prints:
  1. **Tiling.** A ``--side``² 4-band uint16 GeoTIFF (deflate, 512-px blocks) is written by the benchmark, then
     ``pslg tile`` runs on it in a child process: its peak RSS (VmHWM), the scene's decoded size, their ratio
     (a tiler that held the scene would need at least the decoded size), tiles/s; and, as the baseline in the same
     run, the bare windowed read of the same windows (GDAL decode only, no stretch, no PNG), in windows/s.
  2. **Seams.** ``--objects`` rectangles and discs placed across the seams (and in the overlaps, and where four
     tiles meet) of a 4096² scene tiled at 1024/128; each tile's visible part of each object becomes a brush
     annotation, ``pslg export geo`` runs on the export; it checks that every object is exactly one feature and
     prints the lowest IoU of a feature with the object's true outline (its pixel outline on the scene grid).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = """
import sys
from converters.cli.main import app
sys.argv = ["pslg", *sys.argv[1:]]
try:
    app()
finally:  # VmHWM is this process's own peak RSS
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    open(HWM, "w").write(hwm)
"""


def _run_child(args: list[str], hwm_file: Path) -> tuple[float, int]:
    code = f"HWM = {str(hwm_file)!r}\n" + CHILD
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, int(hwm_file.read_text()) * 1024


def bench_tiling(tmp: Path, side: int, tile: int, overlap: int) -> None:
    import rasterio

    from annotate.scene import tile_windows
    from tests.support.geo_scenes import SceneBox, write_geo_scene

    scene = tmp / "big.tif"
    t0 = time.perf_counter()
    write_geo_scene(scene, side, side, [SceneBox(1000, 1000, 1400, 1300)], count=4, block=512,
                    nodata_block=(0, 0, side // 4, side // 4))
    print(f"scene: {side}×{side} px, 4 bands uint16 ({side * side * 8 / 2**30:.2f} GiB decoded, "
          f"{scene.stat().st_size / 2**30:.2f} GiB on disk), written in {time.perf_counter() - t0:.0f} s")
    wall, peak = _run_child(["tile", str(scene), "--size", str(tile), "--overlap", str(overlap), "--out",
                             str(tmp / "tiles"), "--bands", "3,2,1"], tmp / "hwm")
    tasks = json.loads((tmp / "tiles" / "tasks.json").read_text())
    windows = tile_windows(side, side, tile, overlap)
    decoded = side * side * 4 * 2
    print(f"pslg tile: {len(tasks)} tiles ({len(windows) - len(tasks)} nodata-only skipped) in {wall:.1f} s = "
          f"{len(tasks) / wall:.2f} tiles/s; peak RSS {peak / 2**20:.0f} MiB = {peak / decoded:.3f}× the decoded scene")
    # baseline: GDAL's windowed decode of the same windows, 3 bands, nothing else
    t0 = time.perf_counter()
    with rasterio.open(scene) as ds:
        for w in windows:
            ds.read([3, 2, 1], window=w.to_rasterio())
    base = time.perf_counter() - t0
    print(f"baseline (bare windowed read of all {len(windows)} windows): {len(windows) / base:.2f} windows/s; "
          f"pslg tile runs at {(len(tasks) / wall) / (len(windows) / base):.2f}× that rate "
          f"(stretch, nodata check, PNG encode and write per tile)")


def bench_seams(tmp: Path, n_objects: int) -> None:
    import numpy as np
    import shapely

    from annotate.geo_vector import iou, mask_to_geometry
    from annotate.scene import tile_windows
    from converters.geo_export import GeoExportOptions, export_geo
    from converters.labelstudio import brush_region
    from tests.support.geo_scenes import scene_transform, write_geo_scene

    side, tile, overlap = 4096, 1024, 128
    rng = np.random.default_rng(0)
    windows = tile_windows(side, side, tile, overlap)
    seams = sorted({w.col_off for w in windows} | {w.col_off + w.width for w in windows} - {0, side})
    objects = []  # (col0, row0, col1, row1, shape)
    while len(objects) < n_objects:
        kind = len(objects) % 3  # across a vertical seam, across a horizontal one, across both
        sx, sy = rng.choice(seams), rng.choice(seams)
        w, h = rng.integers(30, 200, size=2)
        cx = sx + rng.integers(-w // 2, w // 2) if kind in (0, 2) else rng.integers(100, side - 300)
        cy = sy + rng.integers(-h // 2, h // 2) if kind in (1, 2) else rng.integers(100, side - 300)
        box = (int(cx - w // 2), int(cy - h // 2), int(cx + w // 2), int(cy + h // 2), "disc" if rng.random() < .5 else "rect")
        if box[0] < 0 or box[1] < 0 or box[2] > side or box[3] > side:
            continue
        if any(not (box[2] + 8 <= o[0] or o[2] + 8 <= box[0] or box[3] + 8 <= o[1] or o[3] + 8 <= box[1]) for o in objects):
            continue  # keep objects apart (8 px): two touching objects would be one annotation
        objects.append(box)

    def mask_of(obj, col: int, row: int, w: int, h: int) -> np.ndarray:
        c0, r0, c1, r1, shape = obj
        yy, xx = np.mgrid[row:row + h, col:col + w]
        if shape == "rect":
            return (xx >= c0) & (xx < c1) & (yy >= r0) & (yy < r1)
        cx, cy, rx, ry = (c0 + c1) / 2, (r0 + r1) / 2, (c1 - c0) / 2, (r1 - r0) / 2
        return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0

    t = scene_transform()
    tasks = []
    pieces = 0
    for i, win in enumerate(windows):
        col, row, w, h = win.as_list()
        result = []
        for k, obj in enumerate(objects):
            if obj[2] <= col or obj[0] >= col + w or obj[3] <= row or obj[1] >= row + h:
                continue
            m = mask_of(obj, col, row, w, h)
            if m.any():
                rid = f"o{k}_{i}"
                result += [brush_region(m, "building", region_id=rid),
                           {"id": rid, "type": "textarea", "from_name": "expression", "to_name": "image",
                            "value": {"text": [f"object {k}"]}}]
                pieces += 1
        wt = (t[0], 0.0, t[2] + col * t[0], 0.0, t[4], t[5] + row * t[4])
        tasks.append({"id": i + 1, "data": {"image": f"t{i}.png", "tile": {
            "scene": "seams", "crs": "EPSG:32633", "window": [col, row, w, h], "transform": list(wt)}},
            "annotations": [{"id": i + 1, "completed_by": 1, "result": result}]})
    export = tmp / "seams.json"
    export.write_text(json.dumps(tasks))
    t0 = time.perf_counter()
    report = export_geo(export, tmp / "geo", GeoExportOptions())
    wall = time.perf_counter() - t0
    fc = json.loads((tmp / "geo" / "seams.geojson").read_text())
    feats = {f["properties"]["expression"]: shapely.geometry.shape(f["geometry"]) for f in fc["features"]}
    worst = 1.0
    for k, obj in enumerate(objects):
        c0, r0, c1, r1, _ = obj
        truth = mask_to_geometry(mask_of(obj, c0, r0, c1 - c0, r1 - r0),
                                 (t[0], 0.0, t[2] + c0 * t[0], 0.0, t[4], t[5] + r0 * t[4]))
        worst = min(worst, iou(feats[f"object {k}"], truth))
    one_each = len(fc["features"]) == len(objects) == len(feats)
    print(f"seams: {len(objects)} objects (rectangles and discs) across the seams of {len(windows)} tiles of {tile} px "
          f"(overlap {overlap}) → {pieces} tile pieces → {len(fc['features'])} features; every object one feature: "
          f"{one_each}; lowest IoU with the true outline {worst:.4f}; export {wall:.1f} s; errors {len(report.errors)}")
    if not one_each or worst < 0.99:
        raise SystemExit("seam merge check FAILED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--objects", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pslg-geo-bench-") as tmp:
        os.chdir(REPO)
        bench_seams(Path(tmp), args.objects)
        bench_tiling(Path(tmp), args.side, args.tile, args.overlap)


if __name__ == "__main__":
    main()
