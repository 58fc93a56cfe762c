"""Streaming reader of Label Studio JSON exports (a file, a named pipe or stdin), bounded in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

import ijson

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
