"""Issue 9 items 1 and 9: the Label Studio token goes only to Label Studio's media paths on its own host.

"Same host" is decided on the URL as ``requests`` sends it, so the URL-parser confusions of OWASP's SSRF notes
(backslash, userinfo, ``#``/``?`` before ``@``, whitespace and control characters, percent-encoded hosts, IPv6,
case, default ports, ``http:/\\host``) can never carry the token to another host; API paths never get it; plain
local paths are read only under an allowed root.
"""

from __future__ import annotations


import pytest

from converters.labelstudio.fetch import ImageFetcher, ImageFetchError, LabelStudioAuth, sends_token
from tests.security.conftest import CONFIG, LEGACY, PAT, box_task

# {ls}: the configured Label Studio; {evil}: another host
SENDS = [
    "http://{ls}/data/upload/1/a.png",
    "HTTP://{ls}/data/upload/1/a.png",
    "http://{ls}/data/local-files/?d=scenes/a.png",
    "http://{ls}/tasks/12/resolve/?fileuri=czM6Ly9iL2EucG5n",
    "http://{ls}/projects/3/resolve/?fileuri=czM6Ly9iL2EucG5n",
    "http://{ls}/storage-data/uploaded/?filepath=upload/1/a.png",
    "http://%31%32%37.0.0.1:{ls_port}/data/upload/1/a.png",  # decodes to the Label Studio host itself
]
WITHHOLDS = [
    "http://{evil}\\@{ls}/data/upload/1/a.png",  # the reproduction: urlsplit sees ls, urllib3 connects to evil
    "http://{ls}\\@{evil}/data/upload/1/a.png",
    "http://{ls}@{evil}/data/upload/1/a.png",
    "http://user:pass@{ls}/data/upload/1/a.png",
    "http://{evil}#@{ls}/data/upload/1/a.png",
    "http://{evil}?@{ls}/data/upload/1/a.png",
    "http://{evil}/data/upload/1/a.png",
    "http:/\\{ls}/data/upload/1/a.png",
    "http:\\\\{ls}/data/upload/1/a.png",
    "http://{ls} /data/upload/1/a.png",
    "http://{ls}\t/data/upload/1/a.png",
    "http://{ls}/data/upload/1/a.png\r\nX-Injected: 1",
    "http://{ls}/data/upload/\x00a.png",
    "http://%31%32%37.0.0.1:{evil_port}/data/upload/1/a.png",
    "https://{ls}/data/upload/1/a.png",
    "http://{ls}.evil.example/data/upload/1/a.png",
    "//{ls}/data/upload/1/a.png",
    "http://0x7f.0.0.1:{ls_port}/data/upload/1/a.png",  # may reach the same machine, but not by the same name
    "http://{ls}/api/projects/",  # item 9: API paths never get the token
    "http://{ls}/data/upload/../../api/projects/",
    "http://{ls}/data/upload/%2e%2e/%2e%2e/api/projects/",
    "http://{ls}/proc/self/environ",
]


def _fill(template: str, ls_port: int = 19091, evil_port: int = 19092) -> str:
    return template.format(ls=f"127.0.0.1:{ls_port}", evil=f"127.0.0.1:{evil_port}", ls_port=ls_port, evil_port=evil_port)


@pytest.mark.parametrize("template", SENDS)
def test_media_paths_on_the_label_studio_host_carry_the_token(template):
    assert sends_token(_fill(template), "http://127.0.0.1:19091")


@pytest.mark.parametrize("template", WITHHOLDS)
def test_confusable_foreign_and_api_urls_never_carry_the_token(template):
    assert not sends_token(_fill(template), "http://127.0.0.1:19091")


@pytest.mark.parametrize(("url", "base", "expected"), [
    ("http://ls.example:80/data/upload/a.png", "http://ls.example", True),
    ("https://ls.example:443/data/upload/a.png", "https://ls.example/", True),
    ("http://LS.Example/data/upload/a.png", "http://ls.example", True),
    ("http://ls.example:8080/data/upload/a.png", "http://ls.example", False),
    ("http://ls.example.evil/data/upload/a.png", "http://ls.example", False),
    ("http://[::1]:19091/data/upload/a.png", "http://[::1]:19091", True),
    ("http://[::1]:19092/data/upload/a.png", "http://[::1]:19091", False),
    ("http://[::1]:19091/data/upload/a.png", "http://127.0.0.1:19091", False),
    ("http://ls.example/ls/data/upload/a.png", "http://ls.example/ls/", True),  # Label Studio under a path prefix
    ("http://ls.example/data/upload/a.png", "http://ls.example/ls", False),
    ("http://ls.example/ls/api/projects/", "http://ls.example/ls", False),
])
def test_default_ports_case_ipv6_and_path_prefix(url, base, expected):
    assert sends_token(url, base) is expected


@pytest.mark.parametrize(("template", "reason"), [
    ("http://{evil}\\@{ls}/x.png", "backslash"),  # the reproduction
    ("http:/\\{evil}/data/upload/1/a.png", "backslash"),
    ("http:\\\\{evil}/data/upload/1/a.png", "backslash"),
    ("http://{ls} @{evil}/data/upload/1/a.png", "space"),
    ("http://{ls}@{evil}/data/upload/1/a.png", "user info"),
    ("http://user:pass@{ls}/data/upload/1/a.png", "user info"),
    ("http://{ls}\t/data/upload/1/a.png", "control character"),
    ("http://{ls}/data/upload/1/a.png\r\nX-Injected: 1", "control character"),
])
@pytest.mark.parametrize("token", [LEGACY, PAT])
def test_ambiguous_urls_are_refused_before_any_request(label_studio, attacker, template, reason, token):
    """Refused outright: neither the token nor a refresh request nor the image request reaches anyone."""
    ls_port, evil_port = int(label_studio.url.rsplit(":", 1)[1]), int(attacker.url.rsplit(":", 1)[1])
    fetcher = ImageFetcher(LabelStudioAuth(label_studio.url, token), timeout_s=5)
    with pytest.raises(ImageFetchError, match=reason) as err:
        fetcher.fetch(_fill(template, ls_port, evil_port))
    assert token not in str(err.value)
    assert attacker.requests == [] and label_studio.requests == []


@pytest.mark.parametrize("template", [
    "http://{evil}#@{ls}/data/upload/1/a.png",
    "http://{evil}?@{ls}/data/upload/1/a.png",
    "http://%31%32%37.0.0.1:{evil_port}/data/upload/1/a.png",
])
@pytest.mark.parametrize("token", [LEGACY, PAT])
def test_urls_that_connect_elsewhere_arrive_without_credentials(label_studio, attacker, template, token):
    ls_port, evil_port = int(label_studio.url.rsplit(":", 1)[1]), int(attacker.url.rsplit(":", 1)[1])
    fetcher = ImageFetcher(LabelStudioAuth(label_studio.url, token), timeout_s=5)
    assert fetcher.fetch(_fill(template, ls_port, evil_port)) == attacker.image
    assert len(attacker.requests) == 1
    assert attacker.authorizations() == [] and not attacker.saw(token) and not attacker.saw("access-from")
    assert label_studio.requests == []  # not even a PAT exchange happened for it


def test_spaces_in_a_path_or_query_are_encoded_not_refused(label_studio, tmp_path):
    fetcher = ImageFetcher(LabelStudioAuth(label_studio.url, LEGACY), timeout_s=5)
    assert fetcher.fetch("/data/local-files/?d=my scenes/a b.png") == label_studio.image
    assert [(r.path, r.authorization) for r in label_studio.requests] == [
        ("/data/local-files/?d=my%20scenes/a%20b.png", f"Token {LEGACY}")]
    (tmp_path / "my scenes").mkdir()
    (tmp_path / "my scenes" / "a b.png").write_bytes(b"local")
    assert ImageFetcher(local_files_root=tmp_path).fetch("/data/local-files/?d=my scenes/a b.png") == b"local"


def test_media_path_gets_the_token_and_api_paths_do_not(label_studio):
    fetcher = ImageFetcher(LabelStudioAuth(label_studio.url, LEGACY), timeout_s=5)
    assert fetcher.fetch("/data/upload/1/a.png") == label_studio.image
    fetcher.fetch(f"{label_studio.url}/api/projects/")
    fetcher.fetch(f"{label_studio.url}/data/upload/../../api/users/")
    assert [(r.path, r.authorization) for r in label_studio.requests] == [
        ("/data/upload/1/a.png", f"Token {LEGACY}"), ("/api/projects/", ""), ("/api/users/", "")]
    for path in ("/api/projects/", "/proc/self/environ"):  # relative non-media paths are never sent to Label Studio
        with pytest.raises(ImageFetchError):
            fetcher.fetch(path)
    assert len(label_studio.requests) == 3


def test_local_paths_only_from_the_allowed_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.png").write_bytes(b"inside")
    (tmp_path / "secret.png").write_bytes(b"outside")
    with pytest.raises(ImageFetchError, match="PSLG_LOCAL_IMAGE_ROOT"):
        ImageFetcher().fetch(str(root / "a.png"))
    with pytest.raises(ImageFetchError, match="PSLG_LOCAL_IMAGE_ROOT"):
        ImageFetcher().fetch("/proc/self/environ")
    fetcher = ImageFetcher(local_image_roots=[root])
    assert fetcher.fetch(str(root / "a.png")) == b"inside"
    assert fetcher.fetch("a.png") == b"inside"
    assert fetcher.fetch(f"file://{root / 'a.png'}") == b"inside"
    for outside in (str(tmp_path / "secret.png"), str(root / ".." / "secret.png"), "../secret.png", "/proc/self/environ"):
        with pytest.raises(ImageFetchError, match="not a file under the allowed"):
            fetcher.fetch(outside)


def test_live_project_download_uses_the_same_rule(label_studio, attacker, tmp_path):
    pytest.importorskip("label_studio_sdk")
    from converters.labelstudio.live import LiveProject
    from converters.labelstudio.media import ImageResolveError

    live = LiveProject(label_studio.url, LEGACY, 1)
    live.download("/data/upload/1/a.png", tmp_path / "a.png")
    live.download(f"{label_studio.url}/api/projects/", tmp_path / "b.png")
    live.download("/data/upload/../../api/users/", tmp_path / "c.png")
    live.download(f"{attacker.url}/#@{label_studio.url[7:]}/data/upload/1/a.png", tmp_path / "d.png")
    assert [(r.path, r.authorization) for r in label_studio.requests] == [
        ("/data/upload/1/a.png", f"Token {LEGACY}"), ("/api/projects/", ""), ("/api/users/", "")]
    assert attacker.authorizations() == [] and len(attacker.requests) == 1
    with pytest.raises(ImageResolveError, match="backslash"):
        live.download(f"{attacker.url}\\@{label_studio.url[7:]}/x.png", tmp_path / "e.png")
    assert (tmp_path / "a.png").read_bytes() == label_studio.image


def test_backend_task_images_fail_with_the_reason_in_the_answer(make_app, label_studio, tmp_path):
    """Through /predict: a local path outside the allowed root and an API path each fail that task, saying why,
    in the log and in the prediction's ``error``; nothing reaches Label Studio with the token."""
    root = tmp_path / "allowed"
    root.mkdir()
    from tests.security.conftest import png_bytes

    (root / "ok.png").write_bytes(png_bytes())
    client = make_app(label_studio_url=label_studio.url, label_studio_api_key=LEGACY, local_image_root=str(root))
    tasks = [box_task(1, "/proc/self/environ"), box_task(2, "/api/projects/"), box_task(3, str(root / "ok.png")),
             box_task(4, f"{label_studio.url}/api/projects/")]
    results = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).get_json()["results"]
    assert len(results) == 4
    for failed in results[:2]:  # a relative non-media path is a local path, and neither is under the root
        assert failed["result"] == [] and "not a file under the allowed" in failed["error"]
    assert results[2]["result"] and "error" not in results[2]
    # an absolute URL on the Label Studio host outside its media paths is fetched like any foreign URL: no token
    assert [(r.path, r.authorization) for r in label_studio.requests] == [("/api/projects/", "")]
