"""The COPY binary data path against a real PostgreSQL: every type, NULLs, shapes, round trips, errors."""
import datetime as dt
import logging

import numpy as np
import pytest

from dbt.adapters.sqlflow.data import (
    BatchReader,
    Column,
    DuplicateColumnError,
    Frame,
    UnsupportedTypeError,
    read_frame,
    write_frame,
)

ALL_TYPES = """
select g as id,
       g::smallint as i2, (g * 1000)::integer as i4, (g::bigint * 10000000000) as i8,
       (g / 4.0)::real as f4, (g / 3.0)::double precision as f8, (g / 7.0)::numeric(12, 4) as num,
       (g % 2 = 0) as flag,
       'name ' || g as txt, ('v' || g)::varchar(10) as vc, ('c' || g)::char(4) as ch,
       date '2020-02-28' + g as day,
       timestamp '2021-03-04 05:06:07.123456' + g * interval '1 hour' as ts,
       timestamptz '2021-03-04 05:06:07+02' + g * interval '1 minute' as tstz
from generate_series(1, 5) g
"""


def _nulls_on_even_ids(sql: str, columns) -> str:
    cases = ", ".join(f"case when id % 2 = 0 then null else {c} end as {c}" for c in columns)
    return f"select id, {cases} from ({sql}) t"


def test_every_supported_type_arrives_with_its_values(pg_conn):
    frame = read_frame(pg_conn, ALL_TYPES)
    assert frame.n_rows == 5
    assert frame["i2"].values.tolist() == [1, 2, 3, 4, 5]
    assert frame["i8"].values[0] == 10_000_000_000
    assert frame["f4"].values.dtype == np.float64 and frame["f4"].values[1] == 0.5
    np.testing.assert_allclose(frame["f8"].values, np.arange(1, 6) / 3.0)
    np.testing.assert_allclose(frame["num"].values, np.round(np.arange(1, 6) / 7.0, 4))
    assert frame["num"].source_type == "numeric" and frame["num"].type.name == "double precision"
    assert frame["flag"].values.tolist() == [False, True, False, True, False]
    assert frame["txt"].values.tolist()[0] == "name 1"
    # char(n) reads as text, which drops its padding (PostgreSQL's own cast)
    assert frame["vc"].values[0] == "v1" and frame["ch"].values[0] == "c1"
    assert frame["day"].values[0] == np.datetime64("2020-02-29")
    assert frame["ts"].values[0] == np.datetime64("2021-03-04T06:06:07.123456")
    # timestamptz arrives in UTC
    assert frame["tstz"].values[0] == np.datetime64("2021-03-04T03:07:07")
    assert all(c.nulls is None for c in frame.columns)


def test_nulls_arrive_as_masks_for_every_type(pg_conn):
    names = ["i2", "i4", "i8", "f4", "f8", "num", "flag", "txt", "vc", "ch", "day", "ts", "tstz"]
    frame = read_frame(pg_conn, _nulls_on_even_ids(ALL_TYPES, names))
    for name in names:
        assert frame[name].null_mask.tolist() == [False, True, False, True, False], name
    assert frame["i4"].values[[0, 2, 4]].tolist() == [1000, 3000, 5000]
    assert frame["txt"].values[2] == "name 3"


def test_round_trip_read_write_read_is_equal(pg_conn):
    names = ["i2", "i4", "i8", "f4", "f8", "num", "flag", "txt", "vc", "day", "ts", "tstz"]
    first = read_frame(pg_conn, _nulls_on_even_ids(ALL_TYPES, names))
    write_frame(pg_conn, "round_trip", first)
    second = read_frame(pg_conn, "select * from round_trip")
    assert second.names == first.names
    for a, b in zip(first.columns, second.columns):
        np.testing.assert_array_equal(a.null_mask, b.null_mask, err_msg=a.name)
        np.testing.assert_array_equal(a.values[~a.null_mask], b.values[~b.null_mask], err_msg=a.name)


def test_writer_creates_postgresql_types(pg_conn):
    frame = Frame(
        [
            Column.of("id", np.arange(3)),
            Column.of("score", np.array([0.5, np.nan, 2.0])),
            Column.of("ok", np.array([True, False, True]), nulls=[False, True, False]),
            Column.of("label", np.array(["a", "b", None], object), nulls=[False, False, True]),
            Column.of("day", np.array(["2024-01-01"] * 3, "datetime64[D]")),
        ]
    )
    assert write_frame(pg_conn, '"written"', frame) == 3
    with pg_conn.cursor() as cur:
        cur.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_name = 'written' order by ordinal_position"
        )
        assert cur.fetchall() == [
            ("id", "bigint"),
            ("score", "double precision"),
            ("ok", "boolean"),
            ("label", "text"),
            ("day", "date"),
        ]
        cur.execute("select id, score, ok, label, day from written order by id")
        rows = cur.fetchall()
    assert rows[1][2] is None and rows[2][3] is None
    assert np.isnan(rows[1][1])  # NaN is a value, not NULL
    assert rows[0] == (0, 0.5, True, "a", dt.date(2024, 1, 1))


def test_zero_rows_keep_columns_and_types(pg_conn):
    frame = read_frame(pg_conn, "select 1::int as a, 'x'::text as b, 1.0::float8 as c where false")
    assert frame.n_rows == 0 and frame.names == ["a", "b", "c"]
    assert [c.type.name for c in frame.columns] == ["integer", "text", "double precision"]
    write_frame(pg_conn, "empty_copy", frame)
    assert read_frame(pg_conn, "select * from empty_copy").n_rows == 0


def test_three_hundred_columns(pg_conn):
    columns = ", ".join(f"g * {i} as c{i}" for i in range(320))
    frame = read_frame(pg_conn, f"select {columns}, case when g = 2 then null else g end as last "
                                "from generate_series(1, 3) g")
    assert len(frame.columns) == 321
    assert frame["c319"].values.tolist() == [319, 638, 957]
    assert frame["last"].null_mask.tolist() == [False, True, False]
    # the NULL mask of the 300th-odd column lives in the sixth mask field
    assert frame["c300"].nulls is None


def test_unicode_and_quoted_identifiers(pg_conn):
    sql = 'select 1 as "Größe", 2 as "select", 3 as "with ""quotes""", \'naïve ☃\' as "Ünïcødé"'
    frame = read_frame(pg_conn, sql)
    assert frame.names == ["Größe", "select", 'with "quotes"', "Ünïcødé"]
    assert frame["Ünïcødé"].values[0] == "naïve ☃"
    write_frame(pg_conn, '"Tabelle mit Leerzeichen"', frame)
    again = read_frame(pg_conn, 'select * from "Tabelle mit Leerzeichen"')
    assert again.names == frame.names and again['with "quotes"'].values[0] == 3


def test_trailing_semicolon_and_comment_are_tolerated(pg_conn):
    frame = read_frame(pg_conn, "select 42 as answer -- the answer;\n;")
    assert frame["answer"].values.tolist() == [42]


def test_text_like_types_fall_back_to_text_and_say_so(pg_conn, caplog):
    with pg_conn.cursor() as cur:
        cur.execute("create type mood as enum ('sad', 'happy')")
    sql = ("select 'happy'::mood as mood, '00000000-0000-0000-0000-000000000001'::uuid as uid, "
           "interval '90 minutes' as span, 12.5::money as price")
    with caplog.at_level(logging.INFO, logger="dbt_sqlflow.data"):
        frame = read_frame(pg_conn, sql)
    assert frame["mood"].values[0] == "happy" and frame["mood"].source_type == "mood"
    assert frame["uid"].values[0] == "00000000-0000-0000-0000-000000000001"
    assert frame["span"].values[0] == 5400.0
    assert frame["price"].values[0] == 12.5
    logged = caplog.text
    assert 'column "uid" (uuid)' in logged and 'column "span" (interval)' in logged


@pytest.mark.parametrize("expression, type_name", [
    ("'{1,2}'::int[]", "integer[]"),
    ("'{}'::jsonb", "jsonb"),
    ("'\\x00'::bytea", "bytea"),
    ("point(1, 2)", "point"),
])
def test_unsupported_type_is_a_clear_error_naming_the_column(pg_conn, expression, type_name):
    with pytest.raises(UnsupportedTypeError) as err:
        read_frame(pg_conn, f"select 1 as ok, {expression} as bad_col")
    assert err.value.column == "bad_col" and err.value.type_name == type_name
    assert 'column "bad_col"' in str(err.value) and type_name in str(err.value)
    assert "Cast it" in str(err.value)


def test_duplicate_column_names_are_refused(pg_conn):
    with pytest.raises(DuplicateColumnError, match='two columns named "id"'):
        read_frame(pg_conn, "select 1 as id, 2 as id")


def test_batches_cover_every_row_once_in_order_and_repeat(pg_conn):
    sql = ("select g as id, g * 0.5 as x, case when g % 10 = 0 then null else 'k' || (g % 7) end as cat "
           "from generate_series(1, 100000) g")
    with BatchReader(pg_conn, sql, batch_rows=20_000) as batches:
        assert batches.n_rows == 100_000
        first_pass = [f for f in batches]
        second_pass = [f for f in batches]
    assert len(first_pass) >= 5
    assert max(f.n_rows for f in first_pass) <= 25_000  # bounded by the batch size (page granularity)
    ids = np.concatenate([f["id"].values for f in first_pass])
    np.testing.assert_array_equal(ids, np.arange(1, 100_001))
    np.testing.assert_array_equal(ids, np.concatenate([f["id"].values for f in second_pass]))
    cat_nulls = np.concatenate([f["cat"].null_mask for f in first_pass])
    assert cat_nulls.sum() == 10_000
    with pg_conn.cursor() as cur:  # the staging table is gone after close
        cur.execute("select count(*) from pg_class where relname like '__sqlflow_batches_%'")
        assert cur.fetchone()[0] == 0


def test_batches_of_an_empty_select(pg_conn):
    with BatchReader(pg_conn, "select 1 as a where false", batch_rows=10) as batches:
        frames = list(batches)
    assert batches.n_rows == 0 and sum(f.n_rows for f in frames) == 0


def test_large_mixed_round_trip(pg_conn):
    sql = ("select g as id, case when g % 3 = 0 then null else g * 1.5 end as x, "
           "case when g % 5 = 0 then null else 'label_' || (g % 11) end as label, (g % 2 = 0) as even "
           "from generate_series(1, 200000) g")
    first = read_frame(pg_conn, sql)
    write_frame(pg_conn, "big_copy", first)
    second = read_frame(pg_conn, "select * from big_copy")
    with pg_conn.cursor() as cur:
        cur.execute("select count(*), count(x), count(label), sum(x) from big_copy")
        count, count_x, count_label, sum_x = cur.fetchone()
    assert (count, count_x, count_label) == (200_000, 200_000 - 66_666, 200_000 - 40_000)
    assert sum_x == pytest.approx(np.nansum(np.where(first["x"].null_mask, np.nan, first["x"].values)))
    for a, b in zip(first.columns, second.columns):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.null_mask, b.null_mask)


def test_a_select_of_no_columns_counts_its_rows(pg_conn):
    frame = read_frame(pg_conn, "select from generate_series(1, 3)")
    assert frame.columns == [] and frame.n_rows == 0  # a Frame without columns has no rows to hold
