"""Atomic writes give files the permissions a plain ``open`` would, without ever flipping the process umask
(a flip in threaded code — the backend writes from several threads — lets another thread create files with 0)."""

from __future__ import annotations

import os
import stat

import pytest

from annotate import atomic


def test_files_get_the_umask_permissions_without_touching_the_umask(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = 0o666 & ~atomic.current_umask()

    def no_flips(_mask: int) -> int:
        raise AssertionError("os.umask was called after import")

    monkeypatch.setattr(os, "umask", no_flips)
    atomic.atomic_write_text(tmp_path / "a.txt", "x")
    atomic.atomic_write_bytes(tmp_path / "b.bin", b"y")
    with atomic.atomic_path(tmp_path / "c.png") as tmp:
        tmp.write_bytes(b"z")
    for name in ("a.txt", "b.bin", "c.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected
    assert (tmp_path / "a.txt").read_text() == "x" and (tmp_path / "c.png").read_bytes() == b"z"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.png"]  # no temporary left


def test_the_umask_is_read_as_the_process_has_it(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027 or not os.path.exists("/proc/self/status")
        atomic.atomic_write_text(tmp_path / "a.txt", "x")
        if os.path.exists("/proc/self/status"):
            assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
