"""The next batch to annotate, from Label Studio tasks (a tasks file or a live project).

The selection itself is ``annotate.selection`` (uncertainty + diversity, per-image cap, seeded, stratified at
cold start); this module turns Label Studio tasks into its candidates and, for a live project, puts the batch
in a Data Manager view (tab) so annotators open exactly those tasks.

A task's uncertainty comes from its latest prediction's ``score``: the backend's quality estimate (predicted
IoU) once corrections taught it one (``annotate.quality``). Tasks with an annotation are already labelled: their
regions are the "already covered" side of the diversity term, never candidates. Before any task is labelled (a
new project), or while some unlabelled task has no scored prediction, the batch is a stratified random sample
over the labels of the tasks' pre-labels (or their ``data.category`` / ``data.label``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from annotate.selection import Candidate, Choice, region_features, select_batch

#: Region types whose ``value`` has an x/y/width/height box (percent of the image).
_BOX_TYPES = ("rectanglelabels", "rectangle")
_LABEL_KEYS = ("brushlabels", "rectanglelabels", "polygonlabels", "labels")
VIEW_TITLE = "Next batch (pslg select)"


class SelectionError(ValueError):
    """Tasks that cannot be selected from (the message says which and why)."""


@dataclass
class TaskRegion:
    """What the selection needs of one task."""

    task_id: Optional[int]
    """The task's id, or None for a task without one (``pslg import`` writes such tasks)."""
    image: str
    box_pct: tuple[float, float, float, float]  #: x0, y0, x1, y1 in percent of the image
    label: str
    score: Optional[float]
    labelled: bool
    position: int = 0
    """Where the task is in its file or project listing (0-based): how a task without an id is named."""


def _is_labelled(task: dict) -> bool:
    anns = task.get("annotations") or []
    return any(isinstance(a, dict) and not a.get("was_cancelled") and a.get("result") for a in anns) or bool(
        task.get("is_labeled"))


def _latest_prediction(task: dict) -> Optional[dict]:
    preds = [p for p in (task.get("predictions") or []) if isinstance(p, dict)]
    if not preds:
        return None
    return max(preds, key=lambda p: (str(p.get("updated_at") or p.get("created_at") or ""), p.get("id") or 0))


def _region_box(regions: Iterable[dict]) -> Optional[tuple[float, float, float, float]]:
    for r in regions:
        v = r.get("value") if isinstance(r, dict) else None
        if isinstance(v, dict) and r.get("type") in _BOX_TYPES and {"x", "y", "width", "height"} <= v.keys():
            x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
            return (x, y, x + w, y + h)
    return None


def _region_label(regions: Iterable[dict]) -> str:
    for r in regions:
        v = r.get("value") if isinstance(r, dict) else None
        for key in _LABEL_KEYS:
            if isinstance(v, dict) and v.get(key):
                return str(v[key][0])
    return ""


def task_region(task: dict, image_key: str = "image", position: int = 0) -> TaskRegion:
    """The selection's view of the task at ``position``; ``SelectionError`` naming it when it has no image.

    A task without an id (what ``pslg import`` writes, what ``pslg prelabel`` accepts) is selected by its
    position and named ``task #position``."""
    if not isinstance(task, dict):
        raise SelectionError(f"task #{position}: not a JSON object")
    tid = int(task["id"]) if task.get("id") is not None else None
    name = f"task {tid}" if tid is not None else f"task #{position}"
    data = task.get("data") or {}
    image = data.get(image_key)
    if not isinstance(image, str) or not image:
        raise SelectionError(f"{name}: no image under data.{image_key}")
    labelled = _is_labelled(task)
    source = None
    if labelled:
        source = next(a for a in task["annotations"] if isinstance(a, dict) and a.get("result"))
    pred = _latest_prediction(task)
    regions = (source or pred or {}).get("result") or []
    box = _region_box(regions) or (0.0, 0.0, 100.0, 100.0)
    score = pred.get("score") if pred is not None else None
    label = _region_label(regions) or str(data.get("category") or data.get("label") or "")
    return TaskRegion(tid, image, box, label, None if score is None else float(score), labelled, position)


def select_from_tasks(tasks: Sequence[dict], size: int, per_image_cap: Optional[int] = None, seed: int = 0,
                      image_key: str = "image") -> tuple[list[Choice], list[str]]:
    """The batch (in order, with rationales) from these tasks, and one message per task left out."""
    regions: list[TaskRegion] = []
    problems: list[str] = []
    for position, task in enumerate(tasks):
        try:
            regions.append(task_region(task, image_key, position))
        except (SelectionError, TypeError, ValueError) as exc:
            problems.append(str(exc))
    # tasks are chosen by id; when some task has none, every task is chosen by its position (never two keys)
    by_position = any(r.task_id is None for r in regions)
    key_of = {(r.position if by_position else r.task_id): r for r in regions}
    labels = sorted({r.label for r in regions})
    index = {label: i for i, label in enumerate(labels)}

    def feats(r: TaskRegion) -> list[float]:
        return region_features(r.box_pct, (100, 100), None, index[r.label], len(labels))

    pool = [r for r in regions if not r.labelled]
    # cold start: before any correction the scores are not yet a learned quality estimate
    scored = any(r.labelled for r in regions) and all(r.score is not None for r in pool)
    candidates = [Candidate(r.position if by_position else r.task_id, r.image, feats(r), r.score if scored else None,
                            None, r.label) for r in pool]
    labelled = [feats(r) for r in regions if r.labelled]
    choices = select_batch(candidates, size, per_image_cap, seed, labelled)
    for c in choices:  # the chosen task's id (None without one) and its position, whatever it was chosen by
        region = key_of[c.task_id]
        c.task_id = region.task_id
        c.rationale = {"position": region.position, **c.rationale}
    return choices, problems


def batch_json(choices: Sequence[Choice], source: str, seed: int, per_image_cap: Optional[int]) -> dict[str, Any]:
    """The file ``pslg select`` writes: task ids in order (None for a task without one), their positions in the
    file or project, and a rationale per task."""
    return {"source": source, "seed": seed, "per_image_cap": per_image_cap,
            "task_ids": [c.task_id for c in choices],
            "positions": [c.rationale.get("position") for c in choices],
            "tasks": [{"rank": c.rank, "task_id": c.task_id, **c.rationale} for c in choices]}


class LiveTasks:
    """A live project's tasks and Data Manager views over Label Studio's HTTP API (token never logged)."""

    def __init__(self, url: str, token: str, project: int, timeout_s: float = 60.0) -> None:
        import requests

        from converters.labelstudio.fetch import LabelStudioAuth

        self.url = url.rstrip("/")
        self.project = int(project)
        self.auth = LabelStudioAuth(self.url, token, timeout=timeout_s)
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        r = self._session.request(method, f"{self.url}{path}", headers=self.auth.headers(), timeout=self.timeout_s,
                                  **kwargs)
        if r.status_code == 401 and self.auth.kind == "pat":
            r = self._session.request(method, f"{self.url}{path}", headers=self.auth.headers(refresh=True),
                                      timeout=self.timeout_s, **kwargs)
        if r.status_code >= 300:
            raise SelectionError(f"Label Studio answered HTTP {r.status_code} to {method} {path}: {r.text[:200]}")
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            kind = r.headers.get("Content-Type", "no content type").split(";")[0]
            snippet = " ".join(r.text[:80].split())
            raise SelectionError(f"{self.url}{path} did not answer JSON ({kind}: {snippet!r}); is --url the Label "
                                 "Studio server?") from None

    #: pages read at most when the project does not say how many tasks it has
    MAX_PAGES = 10_000

    def task_count(self) -> Optional[int]:
        """How many tasks the project says it has (``task_number``), or None when it does not say."""
        body = self._call("GET", f"/api/projects/{self.project}")
        count = body.get("task_number") if isinstance(body, dict) else None
        return int(count) if isinstance(count, int) and count >= 0 else None

    def tasks(self, page_size: int = 100) -> list[dict]:
        """Every task of the project with its annotations and predictions.

        Paging stops at a short page, at the listing's ``total``, at the project's task count, or when a page
        repeats the last one: a server that always answers full pages cannot keep this reading forever.
        """
        count = self.task_count()
        max_pages = -(-count // page_size) + 1 if count is not None else self.MAX_PAGES
        out: list[dict] = []
        previous: Optional[list] = None
        for page in range(1, max_pages + 1):
            body = self._call("GET", "/api/tasks", params={"project": self.project, "page": page, "page_size": page_size,
                                                           "fields": "all"})
            batch = body.get("tasks", []) if isinstance(body, dict) else body
            if not isinstance(batch, list):
                raise SelectionError(f"{self.url}/api/tasks answered a {type(batch).__name__}, not a list of tasks")
            ids = [t.get("id") for t in batch if isinstance(t, dict)]
            if ids and ids == previous:  # the server ignores ``page``: the same tasks again
                return out
            previous = ids
            out += batch
            total = body.get("total") if isinstance(body, dict) else None
            if (not batch or len(batch) < page_size or (total is not None and len(out) >= total)
                    or (count is not None and len(out) >= count)):
                return out
        return out

    def task_detail(self, task_id: int) -> dict:
        return self._call("GET", f"/api/tasks/{int(task_id)}")

    def save_view(self, task_ids: Sequence[int], title: str = VIEW_TITLE) -> int:
        """Create (or update, by title) a Data Manager tab holding exactly these tasks; returns the view id.

        The tab filters on the task ids and orders by prediction score, lowest first — the order of the batch
        when it comes from uncertainty; the JSON ``pslg select`` writes keeps the exact rank.
        """
        items = [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(t)} for t in task_ids]
        data = {"title": title, "filters": {"conjunction": "or", "items": items},
                "ordering": ["tasks:predictions_score"]}
        views = self._call("GET", "/api/dm/views", params={"project": self.project}) or []
        existing = next((v for v in views if (v.get("data") or {}).get("title") == title), None)
        if existing is not None:
            self._call("PATCH", f"/api/dm/views/{existing['id']}", json={"project": self.project, "data": data})
            return int(existing["id"])
        created = self._call("POST", "/api/dm/views", json={"project": self.project, "data": data})
        return int(created["id"])

    def view_task_ids(self, view_id: int) -> list[int]:
        """The task ids a view shows, in its order (what an annotator sees in that tab)."""
        body = self._call("GET", "/api/tasks", params={"project": self.project, "view": int(view_id), "page_size": 1000})
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        return [int(t["id"]) for t in tasks]


def load_tasks_file(text: str) -> list[dict]:
    """A Label Studio tasks / export JSON file (a list of tasks, or one task)."""
    data = json.loads(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise SelectionError("the tasks file is not a JSON list of tasks")
    return data
