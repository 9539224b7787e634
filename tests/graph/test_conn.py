"""graph/conn.py: parameters bound as literals (so a reading command never imports pandas) give what DuckDB's own
binding gives: the same values and the same types, for every kind of value the store passes."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claimgraph.graph.conn import Connection

TYPED = "SELECT ?, typeof(?)"


def both(query, params):
    """(literal binding's rows, DuckDB's binding's rows) for one query."""
    out = []
    for literals in (True, False):
        con = Connection(duckdb.connect(), literals=literals)
        out.append(con.execute(query, params).fetchall())
        con.close()
    return out


def same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


texts = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
ints = st.integers(min_value=-2**63, max_value=2**63 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True)
stamps = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))
zoned = st.builds(lambda d, m: d.replace(tzinfo=timezone(timedelta(minutes=m))), stamps,
                  st.integers(min_value=-14 * 60, max_value=14 * 60))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, stamps, zoned, st.dates())


@settings(max_examples=300, deadline=None)
@given(scalars)
def test_a_scalar_binds_to_the_same_value_and_type(v):
    lit, native = both("SELECT typeof(?), ?::VARCHAR", [v, v])  # a TIMESTAMPTZ fetched needs pytz: as text
    assert lit == native, (v, lit, native)
    if not (isinstance(v, datetime) and v.tzinfo is not None):
        lit, native = both(TYPED, [v, v])
        assert same(lit[0][0], native[0][0]), (v, lit, native)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(texts, min_size=1, max_size=5), st.lists(ints, min_size=1, max_size=5),
                 st.lists(st.floats(allow_nan=False), min_size=1, max_size=5)))
def test_a_list_binds_to_the_same_list_and_type(v):
    lit, native = both(TYPED, [v, v])
    assert lit == native, (v, lit, native)


def test_named_parameters_and_the_store_s_query_shapes():
    con = duckdb.connect()
    con.execute("CREATE TABLE e (src VARCHAR, dst VARCHAR, ts TIMESTAMP)")
    con.execute("INSERT INTO e VALUES ('a', 'b', '2026-01-01 10:00:00'), ('b', 'c', '2026-02-01'), ('c', 'a', NULL)")
    cases = [
        ("SELECT dst FROM e WHERE src = $id UNION SELECT src FROM e WHERE dst = $id ORDER BY 1", {"id": "a"}),
        ("SELECT src FROM e WHERE dst = ANY(?) ORDER BY 1", [["a", "b"]]),
        ("SELECT src FROM e WHERE ts > ? ORDER BY 1", [datetime(2026, 1, 15)]),
        ("SELECT src FROM e WHERE ts > ? ORDER BY 1", [datetime(2026, 1, 15, tzinfo=timezone.utc)]),
        ("SELECT count(*) FROM e WHERE src = ? OR ? IS NULL", ["zz", None]),
        ("SELECT src FROM e ORDER BY 1 LIMIT ? OFFSET ?", [2, 1]),
        ("SELECT ?::VARCHAR = 'it''s' ;", ["it's"]),
        # what only looks like a placeholder: in strings, a quoted name, comments
        ("SELECT '?', $$?$$, E'\\'?', ? AS \"?\" -- ?\n/* $1 ? */", ["x"]),
        ("SELECT $2 || $1 || $2, -$3", ["a", "b", 4]),
        ("SELECT $a + $b, $a", {"a": 1, "b": 2.5}),
        ("SELECT ?->>'k', ?[1]", ['{"k": "v"}', ["p", "q"]]),
    ]
    for query, params in cases:
        got = []
        for literals in (True, False):
            c = Connection(con, literals=literals)
            got.append(c.execute(query, params).fetchall())
        assert got[0] == got[1], (query, got)


def test_placeholders_are_found_by_duckdb_s_tokenizer():
    from claimgraph.graph.conn import _Unbindable, inline

    assert inline("SELECT ? -- ?\n, '?'", ["it's"]) == "SELECT (('it''s')::VARCHAR) -- ?\n, '?'"
    assert inline("SELECT $id = $id", {"id": 1}) == "SELECT ((1)::INTEGER) = ((1)::INTEGER)"
    for query, params in [("SELECT ?, $1", [1]), ("SELECT ?; SELECT ?", [1, 2]), ("SELECT $a", {"b": 1}),
                          ("SELECT ?", [1, 2]), ("SELECT $2", [1]), ("SELECT 1", [1]), ("SELECT ?", {"a": 1})]:
        with pytest.raises(_Unbindable):
            inline(query, params)


def test_what_has_no_literal_is_left_to_duckdb():
    """bytes, empty and mixed lists, several statements, placeholders of two styles: DuckDB's binding, the same
    answer (or error) as without Connection."""
    con = Connection(duckdb.connect(), literals=True)
    assert con.execute("SELECT ?", [b"\x00\x01"]).fetchone() == (b"\x00\x01",)
    assert con.execute("SELECT len(?)", [[]]).fetchone() == (0,)
    assert con.execute("SELECT ?", ["a\x00b"]).fetchone() == ("a\x00b",)
    con.execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
    assert con.execute("SELECT count(*) FROM t WHERE x = ?", [1]).fetchone() == (1,)
    with pytest.raises(duckdb.Error):
        con.execute("SELECT ?, ?", [1])  # a wrong count is still an error
    with pytest.raises(duckdb.Error):
        con.execute("SELECT $a", {"b": 1})



@pytest.mark.parametrize("disabled", ["alp,alprd", ""])
def test_embeddings_are_checkpointed_without_alp(tmp_path, monkeypatch, disabled):
    """A file store's writing connections leave ALP / ALP-RD out (on full-precision unit vectors they enlarge the
    file and slow the checkpoint); with the setting emptied, DuckDB picks ALP-RD for the same vectors, so the check
    below can fail. Either way the vectors read back bit for bit."""
    import numpy as np

    from claimgraph.graph import Store, conn

    monkeypatch.setattr(conn, "NO_COMPRESSION", disabled)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3000, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    hashes = [f"{i:032x}" for i in range(len(vecs))]
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.put_embeddings(dict(zip(hashes, vecs)), "m")
    con = duckdb.connect(str(path), read_only=True)
    methods = {m for (m,) in con.execute("SELECT DISTINCT compression FROM pragma_storage_info('embeddings') "
                                         "WHERE column_name = 'vector'").fetchall()}
    back = con.execute("SELECT text_hash, vector FROM embeddings ORDER BY text_hash").fetchall()
    con.close()
    assert np.array_equal(np.array([v for _, v in back], dtype=np.float32), vecs)
    if disabled:
        assert not methods & {"ALP", "ALPRD"}, methods
    else:
        assert "ALPRD" in methods, methods
