"""`pslg select` on a tasks file: the batch, its order, its rationale, the per-image cap, bad tasks."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from converters.cli.main import app


def _task(tid: int, image: str, score=None, label="plane", x=10.0, labelled=False) -> dict:
    box = {"id": f"b{tid}", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
           "value": {"x": x, "y": 20.0, "width": 10.0, "height": 8.0, "rectanglelabels": [label]}}
    task = {"id": tid, "data": {"image": image, "expression": f"the {label}"}, "annotations": [], "predictions": []}
    if score is not None:
        task["predictions"] = [{"id": tid, "model_version": "pslg:x", "score": score, "result": [box],
                                "created_at": "2026-01-01T00:00:00"}]
    if labelled:
        task["annotations"] = [{"id": 100 + tid, "result": [box]}]
    return task


def _run(tmp_path, tasks, *args):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    out = tmp_path / "batch.json"
    result = CliRunner().invoke(app, ["select", str(path), "--out", str(out), *args])
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_uncertain_first_with_a_cap_and_labelled_tasks_left_out(tmp_path):
    tasks = [_task(1, "a.png", 0.9), _task(2, "a.png", 0.2, x=50), _task(3, "a.png", 0.25, x=50),
             _task(4, "b.png", 0.4), _task(5, "c.png", 0.1, labelled=True), _task(6, "b.png", 0.8, label="ship")]
    result, batch = _run(tmp_path, tasks, "--size", "3", "--per-image-cap", "1", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert batch["task_ids"][0] == 2 and 5 not in batch["task_ids"] and len(batch["task_ids"]) == 2  # a.png, b.png: one each
    images = [t["image"] for t in batch["tasks"]]
    assert len(set(images)) == len(images)  # the cap: one per image
    assert batch["tasks"][0]["predicted_iou"] == 0.2 and batch["tasks"][0]["strategy"] == "uncertainty+diversity"
    again, batch2 = _run(tmp_path, tasks, "--size", "3", "--per-image-cap", "1", "--seed", "0")
    assert batch2["task_ids"] == batch["task_ids"]


def test_cold_start_is_stratified_and_bad_tasks_are_named(tmp_path):
    # pre-labelled (scored by today's score) but nothing corrected yet: a cold start
    tasks = [_task(i, f"{i}.png", score=0.1 * i, label=("plane", "ship")[i % 2]) for i in range(1, 9)]
    tasks += [{"id": 99, "data": {}}]
    result, batch = _run(tmp_path, tasks, "--size", "4", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "task 99: no image under data.image" in result.output
    strata = [t["stratum"] for t in batch["tasks"]]
    assert sorted(strata[:2]) == ["plane", "ship"] and sorted(strata[2:]) == ["plane", "ship"]
    assert batch["task_ids"] != [1, 2, 3, 4] and all("stratified" in t["strategy"] for t in batch["tasks"])


def test_a_broken_tasks_file_is_one_clear_error(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text("{not json")
    result = CliRunner().invoke(app, ["select", str(path)])
    assert result.exit_code != 0 and "tasks.json" in result.output


def test_tasks_without_ids_are_selected_by_position(tmp_path):
    tasks = [_task(i, f"{i}.png", score=0.1 * i) for i in range(1, 7)]
    for t in tasks:
        del t["id"]  # what `pslg import` writes
    result, batch = _run(tmp_path, tasks, "--size", "3", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "left out" not in result.output
    assert batch["task_ids"] == [None, None, None]
    assert len(set(batch["positions"])) == 3 and all(0 <= p < 6 for p in batch["positions"])
    assert [t["position"] for t in batch["tasks"]] == batch["positions"]
    chosen_images = [t["image"] for t in batch["tasks"]]
    assert chosen_images == [tasks[p]["data"]["image"] for p in batch["positions"]]


def test_no_selectable_task_is_exit_1(tmp_path):
    result, batch = _run(tmp_path, [{"data": {}}, {"id": 4, "data": {}}])
    assert result.exit_code == 1 and batch is None
    assert "task #0: no image under data.image" in result.output and "task 4: no image" in result.output
    assert "none of the 2 task(s)" in result.output


class _Server:
    """A loopback HTTP server answering ``handler(path, query) -> (status, content_type, body)``; counts requests."""

    def __init__(self, handler):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlparse

        outer = self
        self.requests = 0

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                if url.path == "/api/dm/views":  # the Data Manager tab the batch is saved in
                    status, ctype, body = 200, "application/json", [] if self.command == "GET" else {"id": 1}
                    if self.command == "POST":
                        self.rfile.read(int(self.headers.get("Content-Length", 0)))
                else:
                    outer.requests += 1
                    status, ctype, body = handler(url.path, {k: v[0] for k, v in parse_qs(url.query).items()})
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _live(server, *args):
    return CliRunner().invoke(app, ["select", "--project", "7", "--url", server.url, "--token", "legacy-token",
                                    "--size", "2", *args])


def test_a_server_that_always_answers_full_pages_is_read_a_bounded_number_of_times(tmp_path, monkeypatch):
    def full_pages(path, query):
        if path == "/api/projects/7":
            return 200, "application/json", {"id": 7, "task_number": 250}
        page, size = int(query.get("page", 1)), int(query.get("page_size", 100))
        return 200, "application/json", [_task(page * 1000 + i, f"{i}.png", 0.5) for i in range(size)]

    server = _Server(full_pages)
    try:
        result = _live(server, "--out", str(tmp_path / "b.json"))
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    assert server.requests <= 5  # the project, then pages up to its 250 tasks

    def same_page_no_count(path, query):  # ignores ?page= and says nothing of the project's size
        if path == "/api/projects/7":
            return 200, "application/json", {"id": 7}
        return 200, "application/json", [_task(i, f"{i}.png", 0.5) for i in range(int(query.get("page_size", 100)))]

    server = _Server(same_page_no_count)
    try:
        result = _live(server, "--out", str(tmp_path / "b.json"))
    finally:
        server.close()
    assert result.exit_code == 0 and server.requests <= 3, result.output

    from converters.batch_select import LiveTasks

    monkeypatch.setattr(LiveTasks, "MAX_PAGES", 4)

    def endless(path, query):  # new tasks on every page, no count anywhere
        if path == "/api/projects/7":
            return 200, "application/json", {"id": 7}
        page = int(query.get("page", 1))
        return 200, "application/json", [_task(page * 1000 + i, f"{i}.png", 0.5) for i in range(100)]

    server = _Server(endless)
    try:
        result = _live(server, "--out", str(tmp_path / "b.json"))
    finally:
        server.close()
    assert result.exit_code == 0 and server.requests == 1 + 4, result.output


def test_a_server_that_does_not_answer_json_is_one_line(tmp_path):
    server = _Server(lambda path, query: (200, "text/html", "<html><body>Welcome to nginx</body></html>"))
    try:
        result = _live(server)
    finally:
        server.close()
    assert result.exit_code == 2
    assert "did not answer JSON (text/html" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
