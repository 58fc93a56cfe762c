"""Label Studio brush RLE, byte-identical to ``label_studio_sdk.converter.brush`` and much faster.

Brush RLE
    Label Studio stores a brush mask as an RGBA image (each pixel repeated 4 times, values 0–255, row-major)
    run-length coded and bit-packed MSB-first with the ``@thi.ng/rle-pack`` scheme: a 32-bit value count, 5 bits
    (word size − 1), four 4-bit run-length field sizes − 1 (``3, 4, 8, 16``), then per run a repeat flag, a
    2-bit size index, the length − 1 in that many bits and the value(s). The reference encoder
    (``label_studio_sdk.converter.brush.mask2rle``) builds a Python string of '0'/'1' characters and takes
    seconds on large masks; the one here computes the runs with numpy (``np.flatnonzero`` on the pixel
    changes, without materialising the 4× repeated array) and packs the bits with ``np.packbits``. It is
    **byte-identical** to the sdk, including its quirks, which the tests check on random and real masks:

    * runs of length 1 are written as a literal chunk (flag 0, index 0, length field 0, one value);
      longer runs as repeat chunks with the smallest of the 3/4/8/16-bit length fields that fits up to 256;
    * runs longer than 256 always use the 16-bit field, split into chunks of 65 536 values (the last chunk
      holds the rest, and still uses the 16-bit field even if it is short);
    * the bit stream is padded with zeros to whole bytes, and when it is already a whole number of bytes
      the sdk appends a full zero byte: so does this encoder.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from annotate.geometry import as_bool_mask

# rle-pack parameters used by Label Studio (and the sdk encoder).
_WORD_SIZE = 8
_RLE_SIZES = (3, 4, 8, 16)
_CHUNK_MAX = 1 << 16  # longest repeat chunk the 16-bit field can hold
_HEADER_BITS = 32 + 5 + 4 * 4
#: Chunks packed per block, bounding the temporary (chunks × 27) bit matrix to ~27 MB.
_BLOCK_CHUNKS = 1 << 20



def _header_bits(num: int) -> np.ndarray:
    if num >= 1 << 32:
        raise ValueError(f"brush RLE cannot hold {num} values (the count field is 32 bits)")
    header = (num << 21) | ((_WORD_SIZE - 1) << 16)
    for k, size in enumerate(_RLE_SIZES):
        header |= (size - 1) << (12 - 4 * k)
    shifts = np.arange(_HEADER_BITS - 1, -1, -1, dtype=np.int64)
    return ((np.int64(header) >> shifts) & 1).astype(np.uint8)


def _chunk_bits(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunk codes (MSB-first, left-aligned in 27 bits) and their widths for runs ``lengths`` of ``values``."""
    lengths = lengths.astype(np.int64)
    values = values.astype(np.int64)
    long_ = lengths > 256
    n_chunks = np.where(long_, (lengths + _CHUNK_MAX - 1) // _CHUNK_MAX, 1)
    if np.any(n_chunks > 1):
        run_of_chunk = np.repeat(np.arange(lengths.size), n_chunks)
        last = np.cumsum(n_chunks) - 1
        chunk_len = np.full(run_of_chunk.size, _CHUNK_MAX, dtype=np.int64)
        chunk_len[last] = lengths - (n_chunks - 1) * _CHUNK_MAX
        values = values[run_of_chunk]
        long_ = long_[run_of_chunk]
    else:
        chunk_len = lengths
    idx = np.where(long_, 3, np.where(chunk_len <= 8, 0, np.where(chunk_len <= 16, 1, 2)))
    field = np.asarray(_RLE_SIZES, dtype=np.int64)[idx]
    width = 3 + field + _WORD_SIZE
    # A run of one value is a literal chunk; the 1-value tail of a split long run stays a repeat chunk.
    flag = ((chunk_len > 1) | long_).astype(np.int64)
    code = (flag << (width - 1)) | (idx << (width - 3)) | ((chunk_len - 1) << _WORD_SIZE) | values
    return code << (27 - width), width


def _pack(header: np.ndarray, codes: np.ndarray, widths: np.ndarray) -> bytes:
    shifts = np.arange(26, -1, -1, dtype=np.int64)
    cols = np.arange(27)
    out: list[bytes] = []
    carry = header
    for start in range(0, codes.size, _BLOCK_CHUNKS):
        c = codes[start : start + _BLOCK_CHUNKS]
        w = widths[start : start + _BLOCK_CHUNKS]
        bits = ((c[:, None] >> shifts) & 1).astype(np.uint8)
        bits = bits[cols[None, :] < w[:, None]]
        bits = np.concatenate([carry, bits])
        whole = bits.size - bits.size % 8
        out.append(np.packbits(bits[:whole]).tobytes())
        carry = bits[whole:]
    # The sdk always pads with 8 - (len % 8) zero bits: a whole extra zero byte when already aligned.
    pad = np.zeros(8 - carry.size, dtype=np.uint8)
    out.append(np.packbits(np.concatenate([carry, pad])).tobytes())
    return b"".join(out)


#: Up to this many runs, chunks are coded and packed with Python integers (numpy's per-call overhead dominates
#: for the few hundred runs of a typical object mask); more runs use the vectorised path.
_PY_PACK_MAX_RUNS = 2048


def _encode_runs_py(num: int, lengths: list[int], values: list[int]) -> bytes:
    """The same bytes as ``_pack(_header_bits(num), *_chunk_bits(lengths, values))`` for few runs."""
    if num >= 1 << 32:
        raise ValueError(f"brush RLE cannot hold {num} values (the count field is 32 bits)")
    acc = (num << 21) | ((_WORD_SIZE - 1) << 16)
    for k, size in enumerate(_RLE_SIZES):
        acc |= (size - 1) << (12 - 4 * k)
    nbits = _HEADER_BITS
    for n, v in zip(lengths, values):
        if n == 1:  # literal chunk of one value: flag 0, index 0, 3-bit length 0
            acc = (acc << 14) | v
            nbits += 14
        elif n <= 8:
            acc = (acc << 14) | (0b100 << 11) | ((n - 1) << 8) | v
            nbits += 14
        elif n <= 16:
            acc = (acc << 15) | (0b101 << 12) | ((n - 1) << 8) | v
            nbits += 15
        elif n <= 256:
            acc = (acc << 19) | (0b110 << 16) | ((n - 1) << 8) | v
            nbits += 19
        else:
            while n > _CHUNK_MAX:
                acc = (acc << 27) | (0b111 << 24) | ((_CHUNK_MAX - 1) << 8) | v
                nbits += 27
                n -= _CHUNK_MAX
            acc = (acc << 27) | (0b111 << 24) | ((n - 1) << 8) | v
            nbits += 27
    pad = 8 - nbits % 8  # the sdk pads 1..8 zero bits (a whole byte when already aligned)
    return (acc << pad).to_bytes((nbits + pad) // 8, "big")


def _encode_runs(num: int, lengths: np.ndarray, values: np.ndarray) -> list[int]:
    if lengths.size <= _PY_PACK_MAX_RUNS:
        return list(_encode_runs_py(num, lengths.tolist(), values.tolist()))
    codes, widths = _chunk_bits(lengths, values)
    return list(_pack(_header_bits(num), codes, widths))


def encode_rle_values(values: np.ndarray) -> list[int]:
    """rle-pack encoding of a 1-D array of uint8 values, identical to the sdk's ``encode_rle(values)``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("cannot encode an empty array")
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError("values must be in 0..255 (8-bit words)")
        arr = arr.astype(np.uint8)
    ends = np.append(np.flatnonzero(arr[1:] != arr[:-1]), arr.size - 1)
    lengths = np.diff(np.append(-1, ends))
    return _encode_runs(arr.size, lengths, arr[ends])


def _last_true(flat: np.ndarray, block: int = 1 << 16) -> int:
    """Index of the last True of a bool vector that has one (block-wise from the end: a reversed argmax is slow)."""
    end = flat.size
    while end > 0:
        start = max(end - block, 0)
        hits = np.flatnonzero(flat[start:end])
        if hits.size:
            return start + int(hits[-1])
        end = start
    raise ValueError("no True value")


def brush_rle_encode(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a mask; byte-identical to the sdk's ``mask2rle(mask * 255)``.

    Any non-zero pixel is foreground (alpha 255). The 4× channel repetition is folded into the run
    lengths, so the cost is one pass over the H×W mask plus work proportional to the number of runs.
    """
    m = as_bool_mask(mask)
    if m.size == 0:
        raise ValueError("cannot encode an empty (0-pixel) mask")
    flat = m.ravel()
    # Changes can only lie between the first and the last foreground pixel (bool argmax stops at the first
    # True), so a small object in a large image costs two short scans instead of a full pair-wise comparison.
    first = int(flat.argmax())
    if flat[first]:
        last = _last_true(flat)
        lo = max(first - 1, 0)
        seg = flat[lo : last + 2]
        changes = np.flatnonzero(seg[1:] != seg[:-1]) + lo
    else:
        changes = np.zeros(0, dtype=np.intp)
    ends = np.append(changes, flat.size - 1)
    lengths = np.diff(np.append(-1, ends)) * 4
    values = np.where(flat[ends], 255, 0)
    return _encode_runs(flat.size * 4, lengths, values)


class _BitReader:
    """Reads MSB-first bit fields (up to 32 bits) from a byte string."""

    __slots__ = ("data", "pos", "nbits")

    def __init__(self, data: bytes) -> None:
        self.nbits = len(data) * 8
        self.data = bytes(data) + b"\0" * 8
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.nbits:
            raise ValueError("brush RLE is truncated (ran out of bits)")
        b = self.pos >> 3
        window = int.from_bytes(self.data[b : b + 5], "big")
        v = (window >> (40 - (self.pos & 7) - n)) & ((1 << n) - 1)
        self.pos += n
        return v


def _rle_to_bytes(rle: Sequence[int] | bytes | bytearray | np.ndarray) -> bytes:
    if isinstance(rle, (bytes, bytearray)):
        return bytes(rle)
    arr = np.asarray(rle)
    if arr.ndim != 1:
        raise ValueError("brush RLE must be a flat list of byte values")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("brush RLE values must be bytes (0..255)")
    return arr.astype(np.uint8).tobytes()


def _decode_runs(rle: Sequence[int] | bytes | bytearray | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse an rle-pack stream into ``(values uint8, lengths int64)`` runs (literal values become runs of 1)."""
    data = _rle_to_bytes(rle)
    return _decode_runs_loop(data)


def _decode_runs_loop(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    # A vectorised variant (decode a header at every bit position, then follow the chain) was measured
    # 2-3x slower than this loop: a stream has ~20x more bit positions than chunks.
    r = _BitReader(data)
    if r.nbits < _HEADER_BITS:
        raise ValueError("brush RLE is too short to hold its header")
    num = r.read(32)
    word = r.read(5) + 1
    sizes = [r.read(4) + 1 for _ in range(4)]
    if word > 8:
        raise ValueError(f"brush RLE word size {word} does not fit uint8 values")
    run_values: list[np.ndarray] = []
    run_lengths: list[np.ndarray] = []
    rep_values: list[int] = []  # consecutive repeat chunks, flushed as one array
    rep_lengths: list[int] = []
    bits: np.ndarray | None = None
    weights = 1 << np.arange(word - 1, -1, -1, dtype=np.int64)
    # The hot loop reads a whole chunk header (3 + field + word ≤ 27 bits) from one precomputed 40-bit window
    # per chunk: a typical mask stream is a few hundred chunks and this loop is most of the decode time.
    nbits = r.nbits
    pad = np.frombuffer(r.data, dtype=np.uint8).astype(np.int64)
    windows = ((pad[:-4] << 32) | (pad[1:-3] << 24) | (pad[2:-2] << 16) | (pad[3:-1] << 8) | pad[4:]).tolist()
    masks = [(1 << k) - 1 for k in range(41)]
    wmask = masks[word]
    pos = r.pos
    i = 0
    while i < num:
        if pos + 3 > nbits:
            raise ValueError("brush RLE is truncated (ran out of bits)")
        wv = windows[pos >> 3]
        sh = 37 - (pos & 7)
        head = (wv >> sh) & 7  # repeat flag + 2-bit size index
        field = sizes[head & 3]
        if head & 4:
            end = pos + 3 + field + word
            if end > nbits:
                raise ValueError("brush RLE is truncated (ran out of bits)")
            v = (wv >> (sh - field - word)) & masks[field + word]
            n = 1 + (v >> word)
            if i + n > num:
                raise ValueError(f"brush RLE run overflows its declared length {num}")
            rep_values.append(v & wmask)
            rep_lengths.append(n)
            pos = end
        else:
            if pos + 3 + field > nbits:
                raise ValueError("brush RLE is truncated (ran out of bits)")
            n = 1 + ((wv >> (sh - field)) & masks[field])
            pos += 3 + field
            if i + n > num:
                raise ValueError(f"brush RLE run overflows its declared length {num}")
            if pos + n * word > nbits:
                raise ValueError("brush RLE is truncated (ran out of bits)")
            if bits is None:
                bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
            if rep_values:
                run_values.append(np.asarray(rep_values, dtype=np.uint8))
                run_lengths.append(np.asarray(rep_lengths, dtype=np.int64))
                rep_values, rep_lengths = [], []
            chunk = bits[pos : pos + n * word].reshape(n, word).astype(np.int64)
            run_values.append((chunk @ weights).astype(np.uint8))
            run_lengths.append(np.ones(n, dtype=np.int64))
            pos += n * word
        i += n
    if rep_values:
        run_values.append(np.asarray(rep_values, dtype=np.uint8))
        run_lengths.append(np.asarray(rep_lengths, dtype=np.int64))
    if not run_values:
        return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return np.concatenate(run_values), np.concatenate(run_lengths)


def decode_rle_values(rle: Sequence[int] | bytes | bytearray | np.ndarray) -> np.ndarray:
    """Decode an rle-pack stream to its uint8 values, like the sdk's ``decode_rle`` (malformed → ValueError)."""
    values, lengths = _decode_runs(rle)
    return np.repeat(values, lengths)


def brush_rle_decode(rle: Sequence[int] | bytes | bytearray | np.ndarray, height: int, width: int) -> np.ndarray:
    """Decode a Label Studio brush RLE to a bool ``(height, width)`` mask: on where alpha (channel 4) > 0.

    This is the sdk's ``decode_from_annotation`` (``decode_rle`` reshaped to H×W×4, channel 3), thresholded.
    Only the alpha samples are expanded: a run covering stream positions ``[s, e)`` holds
    ``e // 4 - s // 4`` of them (positions ``4p + 3``). A stream whose value count is not
    ``height × width × 4`` raises ``ValueError`` (wrong size given).
    """
    values, lengths = _decode_runs(rle)
    total = int(lengths.sum())
    if total != height * width * 4:
        raise ValueError(f"brush RLE holds {total} values, expected {height}×{width}×4 = {height * width * 4}")
    ends = np.cumsum(lengths)
    alpha_counts = ends // 4 - (ends - lengths) // 4
    return np.repeat(values > 0, alpha_counts).reshape(height, width)
