"""PostgreSQL's COPY binary format, decoded to and encoded from numpy without a Python loop per row
wherever the row width is fixed.

A stream is a 19-byte header, then per row an int16 field count and per field an int32 length (-1 =
NULL) followed by that many bytes, then an int16 -1 trailer. All integers are big-endian.
"""
import struct
from typing import List, Optional, Sequence, Tuple

import numpy as np

from dbt.adapters.sqlflow.data.pgtypes import PG_EPOCH_DAYS, PG_EPOCH_MICROS, WireType

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_INT32 = struct.Struct(">i")


class CopyFormatError(ValueError):
    pass


# ---------------------------------------------------------------- decoding


def _body_offset(buf: bytes) -> int:
    if buf[: len(SIGNATURE)] != SIGNATURE:
        raise CopyFormatError("not a COPY binary stream")
    (extension_length,) = _INT32.unpack_from(buf, len(SIGNATURE) + 4)
    return len(SIGNATURE) + 8 + extension_length


def _fixed_record_dtype(wires: Sequence[WireType]) -> np.dtype:
    fields = [("count", ">i2")]
    for i, w in enumerate(wires):
        fields += [(f"len{i}", ">i4"), (f"val{i}", w.wire)]
    return np.dtype(fields)


def _decode_fixed(buf: bytes, start: int, wires: Sequence[WireType]) -> List[np.ndarray]:
    dtype = _fixed_record_dtype(wires)
    body = len(buf) - start - len(TRAILER)
    n_rows, rest = divmod(body, dtype.itemsize)
    if rest or buf[-2:] != TRAILER:
        raise CopyFormatError("row widths vary: a fixed-width column held NULL or an unexpected width")
    records = np.frombuffer(buf, dtype, count=n_rows, offset=start)
    for i, w in enumerate(wires):
        if n_rows and not (records[f"len{i}"] == np.dtype(w.wire).itemsize).all():
            raise CopyFormatError(f"field {i} is not {np.dtype(w.wire).itemsize} bytes wide in every row")
    return [records[f"val{i}"] for i in range(len(wires))]


def _scan_rows(buf: bytes, pos: int, fixed_width: int, n_var: int):
    """Row starts plus position and length of each variable field; a Python loop, so text costs."""
    unpack = _INT32.unpack_from
    end = len(buf) - len(TRAILER)
    starts, positions, lengths = [], [], []
    while pos < end:
        starts.append(pos)
        pos += fixed_width
        for _ in range(n_var):
            (length,) = unpack(buf, pos)
            pos += 4
            positions.append(pos)
            lengths.append(length)
            if length > 0:
                pos += length
    if pos != end or buf[end:] != TRAILER:
        raise CopyFormatError("COPY stream ended inside a row")
    return np.asarray(starts, np.int64), positions, np.asarray(lengths, np.int64)


def _gather(raw: np.ndarray, offsets: np.ndarray, wire: str) -> np.ndarray:
    width = np.dtype(wire).itemsize
    if not len(offsets):
        return np.empty(0, wire)
    return raw[offsets[:, None] + np.arange(width)].view(wire).ravel()


def _decode_text(buf: bytes, positions, lengths) -> Tuple[np.ndarray, np.ndarray]:
    values = np.array(
        [buf[p : p + n].decode("utf-8") if n > 0 else "" for p, n in zip(positions, lengths)],
        dtype=object,
    )
    return values, np.asarray(lengths) < 0


def decode(buf: bytes, wires: Sequence[WireType]) -> Tuple[int, List[np.ndarray], List[Optional[np.ndarray]]]:
    """(row count, wire-typed arrays, NULL masks of the variable-width fields) of a COPY binary stream.

    Fixed-width fields must come first and hold no NULLs (the reader coalesces them and ships a
    NULL mask instead); variable-width fields follow.
    """
    start = _body_offset(buf)
    n_fixed = sum(1 for w in wires if w.wire is not None)
    if any(w.wire is None for w in wires[:n_fixed]):
        raise ValueError("variable-width fields must come after the fixed-width ones")
    fixed, var = wires[:n_fixed], wires[n_fixed:]
    if not var:
        arrays = _decode_fixed(buf, start, fixed)
        return (len(arrays[0]) if arrays else _count_rows(buf, start)), list(arrays), [None] * n_fixed

    fixed_width = 2 + sum(4 + np.dtype(w.wire).itemsize for w in fixed)
    starts, positions, lengths = _scan_rows(buf, start, fixed_width, len(var))
    raw = np.frombuffer(buf, np.uint8)
    arrays, masks = [], []
    offset = 2
    for w in fixed:
        arrays.append(_gather(raw, starts + offset + 4, w.wire))
        masks.append(None)
        offset += 4 + np.dtype(w.wire).itemsize
    n_var = len(var)
    for j in range(n_var):
        values, nulls = _decode_text(buf, positions[j::n_var], lengths[j::n_var])
        arrays.append(values)
        masks.append(nulls)
    return len(starts), arrays, masks


def _count_rows(buf: bytes, start: int) -> int:
    """Rows of a stream whose rows have no fields (a SELECT of zero columns)."""
    return (len(buf) - start - len(TRAILER)) // 2


def to_numpy(values: np.ndarray, wire: WireType) -> np.ndarray:
    """Wire values (big-endian, PostgreSQL epochs) as the native numpy dtype of their kind."""
    if wire.kind == "date":
        return (values.astype(np.int64) + PG_EPOCH_DAYS).astype("datetime64[D]")
    if wire.kind == "timestamp":
        return (values.astype(np.int64) + PG_EPOCH_MICROS).astype("datetime64[us]")
    if wire.kind == "text":
        return values
    return values.astype(wire.numpy_dtype)


def to_wire(values: np.ndarray, wire: WireType) -> np.ndarray:
    """Native values as wire values; the inverse of to_numpy."""
    if wire.kind == "date":
        days = values.astype("datetime64[D]").astype(np.int64) - PG_EPOCH_DAYS
        return days.astype(wire.wire)
    if wire.kind == "timestamp":
        micros = values.astype("datetime64[us]").astype(np.int64) - PG_EPOCH_MICROS
        return micros.astype(wire.wire)
    if wire.kind == "text":
        return values
    return np.asarray(values).astype(wire.wire)


# ---------------------------------------------------------------- encoding


def _encode_fixed(fields: Sequence[Tuple[WireType, np.ndarray]], n_rows: int) -> bytes:
    records = np.empty(n_rows, _fixed_record_dtype([w for w, _ in fields]))
    records["count"] = len(fields)
    for i, (w, values) in enumerate(fields):
        records[f"len{i}"] = np.dtype(w.wire).itemsize
        records[f"val{i}"] = values
    return HEADER + records.tobytes() + TRAILER


def _field_payloads(wire: WireType, values: np.ndarray, nulls: np.ndarray):
    """(bytes of the non-NULL values laid end to end, byte length per row with -1 for NULL)."""
    if wire.wire is not None:
        width = np.dtype(wire.wire).itemsize
        payload = np.ascontiguousarray(values[~nulls]).view(np.uint8)
        lengths = np.where(nulls, -1, width)
    else:
        encoded = [str(v).encode("utf-8") for v in values[~nulls]]
        payload = np.frombuffer(b"".join(encoded), np.uint8)
        lengths = np.full(len(values), -1, np.int64)
        lengths[~nulls] = [len(e) for e in encoded]
    return payload, lengths.astype(np.int64)


def _encode_general(fields, masks, n_rows: int) -> bytes:
    """Any mix of NULLs and text: compute every field's offset, then scatter bytes into one buffer."""
    payloads, lengths = zip(*(_field_payloads(w, v, m) for (w, v), m in zip(fields, masks)))
    sizes = np.stack([4 + np.maximum(ln, 0) for ln in lengths], axis=1)  # (rows, fields)
    row_sizes = 2 + sizes.sum(axis=1)
    row_starts = len(HEADER) + np.concatenate([[0], np.cumsum(row_sizes)[:-1]])
    field_starts = row_starts[:, None] + 2 + np.concatenate(
        [np.zeros((n_rows, 1), np.int64), np.cumsum(sizes, axis=1)[:, :-1]], axis=1
    )
    out = np.empty(len(HEADER) + int(row_sizes.sum()) + len(TRAILER), np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, np.uint8)
    out[-len(TRAILER) :] = np.frombuffer(TRAILER, np.uint8)
    count = np.frombuffer(struct.pack(">h", len(fields)), np.uint8)
    out[row_starts[:, None] + np.arange(2)] = count
    for j, (payload, length) in enumerate(zip(payloads, lengths)):
        starts = field_starts[:, j]
        out[starts[:, None] + np.arange(4)] = length.astype(">i4").view(np.uint8).reshape(-1, 4)
        present = length >= 0
        widths = length[present]
        if widths.sum():
            # destination of every payload byte: its field's data start plus its rank inside the field
            first = np.repeat(starts[present] + 4, widths)
            rank = np.arange(int(widths.sum())) - np.repeat(np.cumsum(widths) - widths, widths)
            out[first + rank] = payload
    return out.tobytes()


def encode(fields: Sequence[Tuple[WireType, np.ndarray]], masks: Sequence[Optional[np.ndarray]]) -> bytes:
    """A COPY binary stream of the given wire-typed columns; masks mark NULLs (None = no NULLs)."""
    n_rows = len(fields[0][1]) if fields else 0
    if all(w.wire is not None for w, _ in fields) and all(m is None for m in masks):
        return _encode_fixed(fields, n_rows)
    masks = [np.zeros(n_rows, bool) if m is None else m for m in masks]
    return _encode_general(fields, masks, n_rows)
