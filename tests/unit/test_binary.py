"""COPY binary encoding and decoding without a database: byte layout and round trips."""
import struct

import numpy as np
import pytest

from dbt.adapters.sqlflow.data import binary
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES, wire_type_for

F8, I4, TEXT, BOOL = (WIRE_TYPES[n] for n in ("double precision", "integer", "text", "boolean"))


def test_fixed_width_layout_matches_the_postgresql_format():
    payload = binary.encode([(I4, np.array([7], ">i4")), (F8, np.array([1.5], ">f8"))], [None, None])
    expected = (
        binary.HEADER
        + struct.pack(">h", 2)
        + struct.pack(">i", 4) + struct.pack(">i", 7)
        + struct.pack(">i", 8) + struct.pack(">d", 1.5)
        + struct.pack(">h", -1)
    )
    assert payload == expected


def test_nulls_and_text_are_encoded_with_minus_one_lengths():
    payload = binary.encode(
        [(I4, np.array([1, 0], ">i4")), (TEXT, np.array(["é", None], object))],
        [np.array([False, True]), np.array([False, True])],
    )
    body = payload[len(binary.HEADER) : -2]
    row1 = struct.pack(">h", 2) + struct.pack(">ii", 4, 1) + struct.pack(">i", 2) + "é".encode()
    row2 = struct.pack(">h", 2) + struct.pack(">i", -1) + struct.pack(">i", -1)
    assert body == row1 + row2


@pytest.mark.parametrize("n_rows", [0, 1, 1000])
def test_fixed_round_trip(n_rows):
    rng = np.random.default_rng(0)
    ints = rng.integers(-(2**31), 2**31 - 1, n_rows).astype(">i4")
    floats = rng.normal(size=n_rows).astype(">f8")
    flags = rng.random(n_rows) < 0.5
    payload = binary.encode([(I4, ints), (F8, floats), (BOOL, flags)], [None] * 3)
    n, arrays, masks = binary.decode(payload, [I4, F8, BOOL])
    assert n == n_rows
    np.testing.assert_array_equal(arrays[0], ints)
    np.testing.assert_array_equal(arrays[1], floats)
    np.testing.assert_array_equal(arrays[2], flags)


def test_text_round_trip_with_nulls_and_unicode():
    words = np.array(["a", "", "日本語", "x" * 5000, "tab\tnew\nline"], dtype=object)
    nulls = np.array([False, False, False, False, True])
    ints = np.arange(5).astype(">i4")
    payload = binary.encode([(I4, ints), (TEXT, words)], [None, nulls])
    n, arrays, masks = binary.decode(payload, [I4, TEXT])
    assert n == 5
    np.testing.assert_array_equal(arrays[0], ints)
    assert list(arrays[1][:4]) == list(words[:4])
    np.testing.assert_array_equal(masks[1], nulls)


def test_a_null_in_a_fixed_width_field_is_refused_not_misread():
    payload = binary.encode([(I4, np.array([1, 2], ">i4"))], [np.array([False, True])])
    with pytest.raises(binary.CopyFormatError):
        binary.decode(payload, [I4])


def test_truncated_stream_is_refused():
    payload = binary.encode([(TEXT, np.array(["abc", "def"], object))], [None])
    with pytest.raises(binary.CopyFormatError):
        binary.decode(payload[:-5] + payload[-2:], [TEXT])
    with pytest.raises(binary.CopyFormatError):
        binary.decode(b"not copy data", [TEXT])


def test_dates_and_timestamps_use_the_2000_epoch():
    dates = np.array(["2000-01-01", "1970-01-01", "2024-02-29"], "datetime64[D]")
    wire = binary.to_wire(dates, WIRE_TYPES["date"])
    assert list(wire) == [0, -10957, 8825]
    np.testing.assert_array_equal(binary.to_numpy(wire, WIRE_TYPES["date"]), dates)
    stamps = np.array(["2000-01-01T00:00:01.000001"], "datetime64[us]")
    assert list(binary.to_wire(stamps, WIRE_TYPES["timestamp"])) == [1_000_001]


def test_numpy_dtypes_map_to_postgresql_types():
    assert wire_type_for(np.array([1])).name == "bigint"
    assert wire_type_for(np.array([1.0])).name == "double precision"
    assert wire_type_for(np.array([True])).name == "boolean"
    assert wire_type_for(np.array(["a"], object)).name == "text"
    assert wire_type_for(np.array(["2020-01-01"], "datetime64[D]")).name == "date"
    assert wire_type_for(np.array(["2020-01-01"], "datetime64[ms]")).name == "timestamp"
    with pytest.raises(TypeError):
        wire_type_for(np.array([1 + 2j]))
