"""Label Studio side of the converters: read exports (a file, streamed, or a live project through
label-studio-sdk), pick one annotation per task, turn brush regions into exact masks, and build tasks back.

Two labeling set-ups are understood (shipped in ``converters/configs/``):

* **one expression per task** (RRSIS-D style): ``data = {"image", "expression", ["bbox"], ["category"]}``; all
  brush regions of the chosen annotation are the one referred object (their union).
* **expressions written while annotating**: image-only tasks; each brush region is one object, its
  expressions come from per-region ``TextArea`` results (same region ``id``); several texts = several
  expressions of one object.

The labeling config is read with the SDK's ``LabelInterface`` (names, labels, which control is which), never
by hand. Brush RLE is decoded by :func:`annotate.masks.brush_rle_decode` (byte-compatible with the SDK, much
faster).
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional, Sequence

import ijson

from converters.model import ImageItem, ObjectItem, Report

LOCAL_FILES_PREFIX = "/data/local-files/"
UPLOAD_PREFIX = "/data/upload/"


# ------------------------------------------------------------------------------------------- labeling config
@dataclass
class LabelSchema:
    """What the converters need from a labeling config (read through ``LabelInterface``)."""

    image_name: str = "image"
    image_key: str = "image"
    brush_names: set[str] = field(default_factory=set)
    labels: Optional[list[str]] = None
    """Allowed labels in config order, or None when no config was given (labels are taken as found)."""
    expression_key: str = "expression"
    textarea_names: set[str] = field(default_factory=set)
    """Per-region TextArea controls (expressions written while annotating); empty = accept any textarea."""

    @classmethod
    def from_config(cls, xml: str) -> "LabelSchema":
        from label_studio_sdk.label_interface import LabelInterface

        li = LabelInterface(xml)
        images = [o for o in li.objects if o.tag.lower() == "image"]
        if not images:
            raise ValueError("the labeling config has no <Image> tag")
        brush = [c for c in li.controls if c.tag.lower() == "brushlabels"]
        if not brush:
            raise ValueError("the labeling config has no <BrushLabels> control")
        image = next((o for o in images if o.name in set().union(*(c.to_name for c in brush))), images[0])
        labels: list[str] = []
        for c in brush:
            labels += [lab for lab in c.labels if lab not in labels]
        texts = [o for o in li.objects if o.tag.lower() in ("text", "header") and str(o.value).startswith("$")]
        expr = next((o for o in texts if "expression" in o.name.lower() or "expression" in str(o.value)),
                    texts[0] if texts else None)
        areas = {c.name for c in li.controls if c.tag.lower() == "textarea"
                 and str(c.attr.get("perRegion", "")).lower() == "true"}
        return cls(image_name=image.name, image_key=str(image.value).lstrip("$"), brush_names={c.name for c in brush},
                   labels=labels, expression_key=str(expr.value).lstrip("$") if expr else "expression",
                   textarea_names=areas)


# ------------------------------------------------------------------------------------------- export reading
class MalformedExportError(ValueError):
    """The export file is not valid JSON at some point (the message says where)."""


class _CountingReader:
    """File wrapper for the parser: replays the sniffed head, reads what is available (``read1``: a pipe
    or stdin is consumed as it arrives, never waiting for a full buffer), and counts bytes (error positions,
    progress)."""

    def __init__(self, fh: Any, head: bytes = b"") -> None:
        self.fh = fh
        self.head = head
        self.pos = 0
        self.last_chunk = 0

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes the stream type with read(0): consume nothing
            return b""
        if self.head:
            cut = len(self.head) if n is None or n < 0 else n
            data, self.head = self.head[:cut], self.head[cut:]
        else:
            read1 = getattr(self.fh, "read1", None)
            data = read1(n if n and n > 0 else 1 << 16) if read1 is not None else self.fh.read(n)
        self.last_chunk = self.pos
        self.pos += len(data)
        return data


#: Up to this many bytes, a syntax error is located exactly (line, column) by re-reading the file head.
LOCATE_LIMIT = 512 << 20


def _locate_error(path: Path, upto: int) -> Optional[tuple[int, int, str]]:
    """(line, column, message) of the first JSON syntax error in the first ``upto`` bytes, found by decoding
    the elements one by one with the standard library (only on the error path, bounded by LOCATE_LIMIT)."""
    if upto > LOCATE_LIMIT:
        return None
    with open(path, "rb") as fh:
        text = fh.read(upto).decode("utf-8", errors="replace")
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = len(text) - len(text.lstrip(ws))
    if text[i:i + 1] == "[":
        i += 1
    while i < len(text):
        while i < len(text) and text[i] in ws:
            i += 1
        try:
            _, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            return exc.lineno, exc.colno, exc.msg
        while i < len(text) and text[i] in ws:
            i += 1
        if text[i:i + 1] != ",":
            break
        i += 1
    return None


def iter_export(source: Path | BinaryIO, on_progress: Optional[Callable[[int], None]] = None) -> Iterator[dict]:
    """Stream the tasks of a Label Studio JSON export (a list of tasks, or one task) one at a time.

    ``source`` is a file path (a named pipe works too) or a binary stream such as ``sys.stdin.buffer``.
    ``on_progress(bytes_read)`` is called after each task (for a progress bar over the file size).

    Raises :class:`MalformedExportError` naming the task index and the line/column (byte range for a stream)
    of the first syntax error; the tasks before it have already been yielded (and converted).
    """
    if isinstance(source, (str, Path)):
        path: Optional[Path] = Path(source)
        raw = open(path, "rb")
    else:
        path, raw = None, source
    try:
        head = b""
        while len(head.lstrip()) == 0:  # sniff the first non-blank byte: "[" = list of tasks, "{" = one task
            chunk = raw.read1(64) if hasattr(raw, "read1") else raw.read(64)
            if not chunk:
                break
            head += chunk
        prefix = "item" if head.lstrip().startswith(b"[") else ""
        reader = _CountingReader(raw, head)
        index = 0
        try:
            for obj in ijson.items(reader, prefix, use_float=True):
                yield obj
                index += 1
                if on_progress is not None:
                    on_progress(reader.pos)
        except ijson.JSONError as exc:
            detail = " ".join(str(exc).split())
            found = _locate_error(path, reader.pos) if path is not None and path.is_file() else None
            where = (f"line {found[0]}, column {found[1]} ({found[2]})" if found
                     else f"bytes {reader.last_chunk}–{reader.pos}")
            raise MalformedExportError(
                f"malformed JSON in task #{index} (0-based; the {index} tasks before it were converted) at "
                f"{where}: {detail}") from exc
    finally:
        if path is not None:
            raw.close()


# --------------------------------------------------------------------------------------- annotation choice
Selection = str  # "latest" | "ground-truth" | "annotator:<email or id>"


def _annotator_matches(ann: dict, who: str) -> bool:
    cb = ann.get("completed_by")
    values: list[str] = []
    if isinstance(cb, dict):
        values += [str(cb.get("email", "")), str(cb.get("id", "")), str(cb.get("username", ""))]
    elif cb is not None:
        values.append(str(cb))
    values += [str(ann.get("created_username", "")).split(",")[0].strip(), str(ann.get("email", ""))]
    return who.strip().lower() in {v.strip().lower() for v in values if v}


def _ann_time(ann: dict) -> tuple[str, int]:
    return (str(ann.get("updated_at") or ann.get("created_at") or ""), int(ann.get("id") or 0))


def select_annotation(task: dict, selection: Selection, report: Report) -> Optional[dict]:
    """The annotation that wins for this task, or None (the reason is counted in ``report.skipped``).

    Cancelled (skipped) and empty annotations never win. ``latest``: most recently updated; ``ground-truth``:
    the ground-truth one (latest of them); ``annotator:X``: that annotator's latest (X = email or user id).
    """
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if not anns:
        report.skipped["task without annotation"] += 1
        return None
    live = [a for a in anns if not a.get("was_cancelled")]
    if not live:
        report.skipped["cancelled annotation"] += 1
        return None
    live = [a for a in live if a.get("result")]
    if not live:
        report.skipped["empty annotation"] += 1
        return None
    if selection == "ground-truth":
        live = [a for a in live if a.get("ground_truth")]
        if not live:
            report.skipped["no ground-truth annotation"] += 1
            return None
    elif selection.startswith("annotator:"):
        who = selection.split(":", 1)[1]
        live = [a for a in live if _annotator_matches(a, who)]
        if not live:
            report.skipped["no annotation by the chosen annotator"] += 1
            return None
    elif selection != "latest":
        raise ValueError(f"unknown selection {selection!r} (latest, ground-truth, annotator:EMAIL)")
    return max(live, key=_ann_time)


# ------------------------------------------------------------------------------------------------ images
class ImageResolveError(ValueError):
    pass


class ImageResolver:
    """Turns the image reference a task gives into a local file, and reads its size from the header.

    * ``/data/local-files/?d=REL`` → ``<image_root>/REL``
    * ``/data/upload/P/F`` → ``<image_root>/upload/P/F``, ``<image_root>/P/F`` or ``<image_root>/F``
    * plain paths → as given, else relative to ``image_root`` / the export's folder
    * ``http(s)://`` URLs and Label Studio paths not found locally → downloaded once (with the live project's
      credentials when the URL is on its host) into a scratch folder removed by :meth:`close`.
    """

    def __init__(self, image_root: Optional[Path] = None, base_dir: Optional[Path] = None,
                 fetcher: Optional["LiveProject"] = None) -> None:
        self.image_root = Path(image_root) if image_root else None
        self.base_dir = Path(base_dir) if base_dir else None
        self.fetcher = fetcher
        self._cache: dict[str, tuple[Path, int, int]] = {}
        self._scratch: Optional[tempfile.TemporaryDirectory] = None

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _local_candidates(self, src: str) -> list[Path]:
        roots = [r for r in (self.image_root, self.base_dir) if r is not None]
        if src.startswith(LOCAL_FILES_PREFIX):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(src).query).get("d", [""])[0]
            found = [r / q for r in roots] + ([Path("/") / q] if not roots else [])
            return [c for c in found if ".." not in Path(q).parts]  # stay under the root, as Label Studio does
        if src.startswith(UPLOAD_PREFIX):
            parts = Path(urllib.parse.unquote(src[len(UPLOAD_PREFIX):]))
            if ".." in parts.parts:
                return []
            return [c for r in roots for c in (r / "upload" / parts, r / parts, r / parts.name)]
        if "://" in src:
            return []
        p = Path(urllib.parse.unquote(src))
        return [p] if p.is_absolute() else [r / p for r in roots] + [p]

    def _download(self, src: str) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="pslg-images-")
        name = os.path.basename(urllib.parse.urlparse(src).path) or "image"
        if src.startswith(LOCAL_FILES_PREFIX):
            name = os.path.basename(urllib.parse.parse_qs(urllib.parse.urlparse(src).query).get("d", [name])[0])
        dest = Path(self._scratch.name) / str(len(self._cache)) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.fetcher is not None:
            self.fetcher.download(src, dest)
        elif src.startswith(("http://", "https://")):
            import requests

            with requests.get(src, timeout=60, stream=True) as resp:
                if resp.status_code != 200:
                    raise ImageResolveError(f"image {src}: HTTP {resp.status_code}")
                with open(dest, "wb") as fh:
                    for chunk in resp.iter_content(1 << 16):
                        fh.write(chunk)
        else:
            raise ImageResolveError(f"image {src} not found locally (give --image-root)")
        return dest

    def resolve(self, src: str) -> tuple[Path, int, int]:
        """(local path, width, height) for the image reference ``src``; cached per reference."""
        hit = self._cache.get(src)
        if hit is not None:
            return hit
        path = next((c for c in self._local_candidates(src) if c.is_file()), None)
        if path is None:
            if "://" in src or (src.startswith("/data/") and self.fetcher is not None):
                try:
                    path = self._download(src)
                except ImageResolveError:
                    raise
                except Exception as exc:  # network errors: name the image, never the credentials
                    raise ImageResolveError(f"image {src} could not be downloaded: {type(exc).__name__}") from exc
            else:
                tried = ", ".join(str(c) for c in self._local_candidates(src)[:3]) or "no local candidate"
                raise ImageResolveError(f"image {src} not found (tried {tried}; give --image-root)")
        width, height = image_size(path)
        self._cache[src] = (path, width, height)
        return self._cache[src]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header (PIL reads no pixels); falls back to annotate.image_io."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except Exception:
        from annotate.image_io import load_image

        try:
            rgb = load_image(path).rgb
        except Exception as exc:
            raise ImageResolveError(f"image {path} cannot be read: {exc}") from exc
        return int(rgb.shape[1]), int(rgb.shape[0])


# ------------------------------------------------------------------------------------------ task → item
MissingExpression = str  # "error" | "label" | "skip" | "allow"


def _expressions_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, str) and v.strip()]
    return []


def label_to_phrase(label: str) -> str:
    return label.replace("_", " ").strip().lower()


def task_to_item(task: dict, annotation: dict, schema: LabelSchema, resolver: ImageResolver, report: Report,
                 missing_expression: MissingExpression = "error") -> Optional[ImageItem]:
    """Turn one task + its chosen annotation into an :class:`ImageItem`; per-item problems go to ``report``."""
    from annotate.masks import brush_rle_decode

    tid = task.get("id", "?")
    where = f"task {tid}"
    data = task.get("data")
    if not isinstance(data, dict):
        report.error(where, "task has no 'data' object")
        return None
    src = data.get(schema.image_key)
    if not isinstance(src, str) or not src:
        report.error(where, f"task has no data.{schema.image_key}")
        return None
    try:
        path, width, height = resolver.resolve(src)
    except ImageResolveError as exc:
        report.error(where, str(exc))
        return None
    results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
    texts: dict[str, list[str]] = {}
    for r in results:
        if str(r.get("type", "")).lower() == "textarea" and (not schema.textarea_names
                                                            or r.get("from_name") in schema.textarea_names):
            texts.setdefault(str(r.get("id")), []).extend(_expressions_of((r.get("value") or {}).get("text")))
    task_exprs = _expressions_of(data.get(schema.expression_key))
    per_task = schema.expression_key in data
    objects: list[ObjectItem] = []
    for i, r in enumerate(results):
        if str(r.get("type", "")).lower() != "brushlabels":
            continue
        if schema.brush_names and r.get("from_name") not in schema.brush_names:
            continue
        rwhere = f"task {tid} region {r.get('id', i)}"
        value = r.get("value") or {}
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            report.error(rwhere, "brush region without an RLE mask")
            continue
        labels = value.get("brushlabels") or []
        label = labels[0] if labels else data.get("category")
        if not label:
            report.error(rwhere, "brush region without a label")
            continue
        if schema.labels is not None and label not in schema.labels:
            report.error(rwhere, f"unknown label {label!r} (not in the labeling config)")
            continue
        h, w = r.get("original_height", height), r.get("original_width", width)  # absent: the RLE length decides
        if (h, w) != (height, width):
            report.error(rwhere, f"mask size {w}x{h} disagrees with image {src} of size {width}x{height}")
            continue
        try:
            mask = brush_rle_decode(value["rle"], height, width)
        except Exception as exc:
            report.error(rwhere, f"brush RLE does not decode: {exc}")
            continue
        exprs = list(task_exprs) if per_task else list(texts.get(str(r.get("id")), []))
        objects.append(ObjectItem(mask=mask, category=str(label), expressions=exprs, where=rwhere))
    if not objects:
        report.skipped["annotation without a brush mask"] += 1
        return None
    if per_task and len(objects) > 1:  # one task = one referred object: its brush strokes are merged
        cats = {o.category for o in objects}
        if len(cats) > 1:
            report.error(where, f"one-expression task has brush regions with different labels {sorted(cats)}")
            return None
        merged = objects[0].mask.copy()
        for o in objects[1:]:
            merged |= o.mask
        objects = [ObjectItem(mask=merged, category=objects[0].category, expressions=objects[0].expressions,
                              where=where)]
    kept: list[ObjectItem] = []
    for o in objects:
        if not o.expressions:
            if missing_expression == "error":
                report.error(o.where, "result without an expression (--missing-expression label uses the label instead)")
                continue
            if missing_expression == "skip":
                report.skipped["object without an expression"] += 1
                continue
            if missing_expression == "label":
                o.expressions = [label_to_phrase(o.category)]
        kept.append(o)
    if not kept:
        return None
    split = data.get("split") if isinstance(data.get("split"), str) else None
    return ImageItem(source=src, path=path, width=width, height=height, objects=kept, split=split, where=where)


def iter_items(tasks: Iterator[dict], schema: LabelSchema, resolver: ImageResolver, report: Report,
               selection: Selection = "latest", missing_expression: MissingExpression = "error",
               ) -> Iterator[ImageItem]:
    """Tasks → items, one at a time (bounded memory); bad tasks are reported and skipped."""
    for i, task in enumerate(tasks):
        report.counts["tasks"] += 1
        if not isinstance(task, dict):
            report.error(f"task #{i}", f"not a JSON object ({type(task).__name__})")
            continue
        ann = select_annotation(task, selection, report)
        if ann is None:
            continue
        item = task_to_item(task, ann, schema, resolver, report, missing_expression)
        if item is not None:
            yield item


# ----------------------------------------------------------------------------------------- item → tasks
def brush_region(mask: Any, label: str, *, from_name: str = "tag", to_name: str = "image",
                 region_id: Optional[str] = None) -> dict:
    """A Label Studio brush result for a bool mask (``brushlabels`` always filled)."""
    from annotate.masks import brush_rle_encode

    h, w = mask.shape
    region = {"type": "brushlabels", "from_name": from_name, "to_name": to_name, "original_width": int(w),
              "original_height": int(h), "image_rotation": 0,
              "value": {"format": "rle", "rle": [int(v) for v in brush_rle_encode(mask)], "brushlabels": [label]}}
    if region_id is not None:
        region["id"] = region_id
    return region


def textarea_region(texts: Sequence[str], region_id: str, *, from_name: str = "expression",
                    to_name: str = "image") -> dict:
    """A per-region TextArea result attached to the brush region with the same ``id``."""
    return {"id": region_id, "type": "textarea", "from_name": from_name, "to_name": to_name,
            "value": {"text": list(texts)}}


# ----------------------------------------------------------------------------------------- live project
class LiveProject:
    """A Label Studio project read through label-studio-sdk (``LabelStudio(base_url, api_key)``).

    The SDK decides how to authenticate from the token itself: a JWT (personal access token, LS ≥ 1.18)
    is exchanged at ``/api/token/refresh`` and sent as ``Bearer`` (re-exchanged when the access token
    expires); anything else is a legacy token sent as ``Token``. The token is never printed or put in
    messages.
    """

    def __init__(self, url: str, token: str, project_id: int) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.project_id = int(project_id)
        self._client = LabelStudio(base_url=self.url, api_key=token)

    def user_id(self, email: str) -> Optional[int]:
        """The id of the user with this email (JSON exports name annotators by id only)."""
        for user in self._client.users.list():
            if str(getattr(user, "email", "")).lower() == email.strip().lower():
                return int(user.id)
        return None

    def label_config(self) -> str:
        return str(self._client.projects.get(id=self.project_id).label_config)

    def download_export(self, dest: Path) -> Path:
        """Stream the project's JSON export (all tasks) to ``dest`` without holding it in memory."""
        with open(dest, "wb") as fh:
            for chunk in self._client.projects.exports.download_sync(
                    id=self.project_id, export_type="JSON", download_all_tasks=True):
                fh.write(chunk)
        return dest

    def _auth_headers(self) -> dict[str, str]:
        headers = self._client._client_wrapper.get_headers()  # the SDK's own PAT→access exchange / legacy
        return {k: v for k, v in headers.items() if k.lower() == "authorization"}

    def download(self, src: str, dest: Path) -> None:
        """Download an image the task references (relative LS paths are on this server)."""
        import requests

        url = src if "://" in src else self.url + src
        same_host = urllib.parse.urlparse(url).netloc == urllib.parse.urlparse(self.url).netloc
        with requests.get(url, headers=self._auth_headers() if same_host else {}, timeout=60, stream=True) as resp:
            if resp.status_code != 200:
                raise ImageResolveError(f"image {src}: HTTP {resp.status_code} from the server")
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(1 << 16):
                    fh.write(chunk)
