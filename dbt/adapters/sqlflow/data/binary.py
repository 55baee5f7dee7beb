"""PostgreSQL's COPY binary format, decoded to and encoded from numpy without a Python loop per row
wherever the row width is fixed.

A stream is a 19-byte header, then per row an int16 field count and per field an int32 length (-1 =
NULL) followed by that many bytes, then an int16 -1 trailer. All integers are big-endian.
"""

import struct
from typing import Dict, List, Optional, Sequence, Tuple

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


MASK_BITS = 63  # NULL flags per bigint mask field (the sign bit stays unused)
_INT64 = struct.Struct(">q")


def _fixed_record_dtype(wires: Sequence[WireType]) -> np.dtype:
    fields = [("count", ">i2")]
    for i, w in enumerate(wires):
        fields += [(f"len{i}", ">i4"), (f"val{i}", w.wire)]
    return np.dtype(fields)


def _full_width_records(buf: bytes, start: int, wires: Sequence[WireType]) -> Optional[np.ndarray]:
    """The rows as one structured array, or None when they are not all full width (some NULL)."""
    dtype = _fixed_record_dtype(wires)
    n_rows, rest = divmod(len(buf) - start - len(TRAILER), dtype.itemsize)
    if rest or buf[-2:] != TRAILER:
        return None
    records = np.frombuffer(buf, dtype, count=n_rows, offset=start)
    last = f"len{len(wires) - 1}"
    if n_rows and not (
        (records["count"] == len(wires)).all()
        and (records[last] == dtype[f"val{len(wires) - 1}"].itemsize).all()
    ):
        return None
    return records


def _columns_of(
    records: np.ndarray, names: Sequence[str], block_rows: int = 16_384
) -> List[np.ndarray]:
    """Native-endian column arrays of the records, converted a cache-sized block of rows at a time:
    column by column over the whole buffer would stream all of it through memory once per column."""
    columns = [np.empty(len(records), records.dtype[n].newbyteorder("=")) for n in names]
    for start in range(0, len(records), block_rows):
        block = records[start : start + block_rows]
        for name, column in zip(names, columns):
            column[start : start + block_rows] = block[name]
    return columns


def _is_null(row_masks: np.ndarray, field: int) -> np.ndarray:
    group, bit = divmod(field, MASK_BITS)
    return ((row_masks[:, group] >> bit) & 1).astype(bool)


def _scan_rows(buf: bytes, pos: int, n_masks: int, widths: Sequence[int], n_var: int):
    """Row starts, NULL masks, and position and length of each variable field.

    A Python loop over rows, so it runs only for streams with text or NULLs: one mask read gives the
    width of a row's fixed part (a NULL field is just its -1 length), then each text field's length.
    """
    unpack32, unpack64 = _INT32.unpack_from, _INT64.unpack_from
    mask_offsets = [pos_ + 6 for pos_ in range(0, 12 * n_masks, 12)]
    head = 2 + 12 * n_masks
    fixed_width: Dict[tuple, int] = {}
    end = len(buf) - len(TRAILER)
    starts, row_masks, positions, lengths = [], [], [], []
    while pos < end:
        starts.append(pos)
        key = tuple(unpack64(buf, pos + o)[0] for o in mask_offsets)
        row_masks.append(key)
        width = fixed_width.get(key)
        if width is None:
            masks = np.array([key], np.int64).reshape(1, -1)
            width = fixed_width[key] = head + sum(
                4 + (0 if n_masks and _is_null(masks, j)[0] else w) for j, w in enumerate(widths)
            )
        pos += width
        for _ in range(n_var):
            (length,) = unpack32(buf, pos)
            pos += 4
            positions.append(pos)
            lengths.append(length)
            if length > 0:
                pos += length
    if pos != end or buf[end:] != TRAILER:
        raise CopyFormatError("COPY stream ended inside a row")
    masks = np.array(row_masks, np.int64).reshape(len(starts), n_masks)
    return np.asarray(starts, np.int64), masks, positions, np.asarray(lengths, np.int64)


def _gather_fixed(buf: bytes, starts, row_masks, n_masks: int, fixed: Sequence[WireType]):
    """Each fixed field's values (0 where NULL) and NULL mask, found by walking the field offsets."""
    raw = np.frombuffer(buf, np.uint8)
    offsets = starts + 2 + 12 * n_masks
    arrays, nulls = [], []
    for j, w in enumerate(fixed):
        width = np.dtype(w.wire).itemsize
        null = _is_null(row_masks, j) if n_masks else np.zeros(len(starts), bool)
        present = offsets[~null]
        declared = raw[present[:, None] + np.arange(4)].view(">i4").ravel()
        if (declared != width).any():
            raise CopyFormatError(
                f"field {j} is not {width} bytes wide where the NULL mask says it is set"
            )
        values = np.zeros(len(starts), np.dtype(w.wire).newbyteorder("="))
        values[~null] = raw[present[:, None] + 4 + np.arange(width)].view(w.wire).ravel()
        arrays.append(values)
        nulls.append(null if null.any() else None)
        offsets = offsets + 4 + np.where(null, 0, width)
    return arrays, nulls


def _decode_text(buf: bytes, positions, lengths) -> Tuple[np.ndarray, np.ndarray]:
    values = np.array(
        [buf[p : p + n].decode("utf-8") if n > 0 else "" for p, n in zip(positions, lengths)],
        dtype=object,
    )
    return values, np.asarray(lengths) < 0


def decode(buf: bytes, wires: Sequence[WireType], n_masks: int = 0):
    """(row count, arrays, NULL masks) of a COPY binary stream, one array per field after the masks.

    Row layout: `n_masks` bigint mask fields (bit b of mask m set = fixed field 63*m + b is NULL),
    then the fixed-width fields, then the variable-width (text) ones. Without masks the fixed fields
    must not hold NULL. NULL-free, text-free streams decode with one np.frombuffer and no row loop.
    """
    start = _body_offset(buf)
    fields = wires[n_masks:]
    n_fixed = sum(1 for w in fields if w.wire is not None)
    if any(w.wire is None for w in fields[:n_fixed]):
        raise ValueError("variable-width fields must come after the fixed-width ones")
    fixed, var = fields[:n_fixed], fields[n_fixed:]
    if not wires:
        return (len(buf) - start - len(TRAILER)) // 2, [], []
    if not var:
        records = _full_width_records(buf, start, wires)
        if records is not None:
            columns = _columns_of(records, [f"val{i}" for i in range(len(wires))])
            if not any(m.any() for m in columns[:n_masks]):
                return len(records), columns[n_masks:], [None] * n_fixed
    widths = [np.dtype(w.wire).itemsize for w in fixed]
    starts, row_masks, positions, lengths = _scan_rows(buf, start, n_masks, widths, len(var))
    arrays, nulls = _gather_fixed(buf, starts, row_masks, n_masks, fixed)
    for j in range(len(var)):
        values, null = _decode_text(buf, positions[j :: len(var)], lengths[j :: len(var)])
        arrays.append(values)
        nulls.append(null)
    return len(starts), arrays, nulls


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
    field_starts = (
        row_starts[:, None]
        + 2
        + np.concatenate(
            [np.zeros((n_rows, 1), np.int64), np.cumsum(sizes, axis=1)[:, :-1]], axis=1
        )
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


def encode(
    fields: Sequence[Tuple[WireType, np.ndarray]], masks: Sequence[Optional[np.ndarray]]
) -> bytes:
    """A COPY binary stream of the given wire-typed columns; masks mark NULLs (None = no NULLs)."""
    n_rows = len(fields[0][1]) if fields else 0
    if all(w.wire is not None for w, _ in fields) and all(m is None for m in masks):
        return _encode_fixed(fields, n_rows)
    masks = [np.zeros(n_rows, bool) if m is None else m for m in masks]
    return _encode_general(fields, masks, n_rows)
