"""The light install (``pip install .`` from a clone, no model extras) must work without torch.

Each check runs in a fresh interpreter, because this test process may already have imported torch:

* the weights-free path (backend app, CLI, a classical ``pslg segment``, a batch ``/predict``, ``pslg export``)
  never imports torch, transformers or segment_anything, even where they are installed;
* with those packages made unimportable (what a light install looks like), commands that need them fail with
  a one-line message naming the extra, and the backend reports the same message instead of a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "transformers", "segment_anything")


def _run(script: str, tmp_path: Path) -> dict:
    """Run ``script`` in a new interpreter (cwd = tmp_path); it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin",
                                                       "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


WEIGHTS_FREE = """
import json, sys
from pathlib import Path

import cv2
from typer.testing import CliRunner

import backend.app
import converters.cli.main
from annotate.synthetic import make_scene
from backend.config import Settings
from backend.runtime import Runtime
from converters.synthetic_export import write_synthetic_export

scene = make_scene(seed=1, height=120, width=160, n_objects=2)
cv2.imwrite("scene.png", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
x0, y0, x1, y1 = scene.objects[0].box
runner = CliRunner()
seg = runner.invoke(converters.cli.main.app, ["segment", "scene.png", "--box", f"{x0},{y0},{x1},{y1}", "--out", "out"])

settings = Settings(model_dir=Path("model"), local_files_root=str(Path.cwd()), workers=1)
runtime = Runtime(settings)
assert runtime.engine.wait_ready(120), runtime.engine.error
app = backend.app.create_app(settings, runtime=runtime)
config = ('<View><Image name="image" value="$image"/><Text name="expression" value="$expression"/>'
          '<BrushLabels name="mask" toName="image"><Label value="vehicle"/></BrushLabels></View>')
task = {"id": 1, "data": {"image": "/data/local-files/?d=scene.png", "expression": "the object",
                          "bbox": [x0, y0, x1 - x0, y1 - y0]}}
reply = app.test_client().post("/predict", json={"tasks": [task], "label_config": config, "project": "1.1"})
regions = reply.get_json()["results"][0]["result"]

export, _ = write_synthetic_export(Path("syn"), n_images=1, tasks_per_image=2)
exp = runner.invoke(converters.cli.main.app, ["export", "coco", str(export), "--out", "coco", "--image-root", "syn"])
runtime.store.close()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps({"segment": seg.exit_code, "mask": Path("out/mask.png").is_file(), "predict": reply.status_code,
                  "brush": sum(r.get("type") == "brushlabels" for r in regions), "export": exp.exit_code,
                  "coco": Path("coco/annotations.json").is_file(), "heavy": heavy}))
""" % (HEAVY,)


def test_weights_free_path_never_imports_torch(tmp_path: Path) -> None:
    out = _run(WEIGHTS_FREE, tmp_path)
    assert out["segment"] == 0 and out["mask"], out
    assert out["predict"] == 200 and out["brush"] == 1, out
    assert out["export"] == 0 and out["coco"], out
    assert out["heavy"] == [], f"the weights-free path imported {out['heavy']}"


WITHOUT_EXTRAS = """
import json, sys
for name in %r:
    sys.modules[name] = None  # what a light install looks like: these cannot be imported
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

import converters.cli.main
from backend.config import Settings
from backend.engine import Engine

cv2.imwrite("scene.png", np.full((64, 64, 3), 90, np.uint8))
runner = CliRunner()
sam = runner.invoke(converters.cli.main.app, ["segment", "scene.png", "--box", "4,4,40,40", "--checkpoint", "sam.pth",
                                              "--out", "out"])
dino = runner.invoke(converters.cli.main.app, ["segment", "scene.png", "--text", "the roof", "--grounding",
                                               "IDEA-Research/grounding-dino-tiny", "--out", "out"])
engine = Engine(Settings(model_dir=Path("model"), sam_checkpoint="sam.pth")).start()
engine.wait_ready(60)
print(json.dumps({"sam": [sam.exit_code, sam.output], "dino": [dino.exit_code, dino.output],
                  "engine": [engine.state, engine.error]}))
""" % (HEAVY,)


def test_missing_extras_are_named(tmp_path: Path) -> None:
    out = _run(WITHOUT_EXTRAS, tmp_path)
    code, text = out["sam"]
    assert code == 2 and "SAM needs the [sam] extra: pip install '.[sam]' in the repository's folder" in " ".join(text.split()), text
    assert "Traceback" not in text
    code, text = out["dino"]
    assert code == 2 and "pip install '.[grounding]'" in " ".join(text.split()), text
    state, error = out["engine"]
    assert state != "ready" and "pip install '.[sam]'" in error, out["engine"]
