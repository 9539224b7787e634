"""DuckDB schema and its migrations.

The database is plain DuckDB: no extension is needed to read any table. Every migration is a list of
statements applied in one transaction, and `schema_version` records each one applied.
To change the schema, append a migration; never edit one that has shipped.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EMBED_DIM = 384  # all-MiniLM-L6-v2


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    backfill: Callable[[Any], None] | None = None  # run after the statements, in the same transaction


def node_terms_as_lists(con: Any) -> None:
    """node_terms from a row per (node, term) to a row per node: its terms (sorted) and their counts as two aligned
    lists. A table already in that layout is left as it is."""
    cols = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'node_terms' "
                                      "AND database_name = current_database()").fetchall()}
    if "term" not in cols:
        return
    for stmt in (
        """CREATE TABLE node_terms_v9 (         -- keyword index for BM25: each node's terms, tfs[i] counts terms[i]
            node_id VARCHAR NOT NULL,
            terms   VARCHAR[] NOT NULL,
            tfs     INTEGER[] NOT NULL
        )""",
        "INSERT INTO node_terms_v9 SELECT node_id, list(term ORDER BY term), list(tf ORDER BY term) FROM node_terms "
        "GROUP BY node_id ORDER BY node_id",
        "DROP INDEX IF EXISTS node_terms_node",
        "DROP TABLE node_terms",
        "ALTER TABLE node_terms_v9 RENAME TO node_terms",
        "CREATE INDEX node_terms_node ON node_terms(node_id)",
    ):
        con.execute(stmt)


def relativize_run_paths(con: Any) -> None:
    """Run folders under the store's own folder recorded relative to it (see graph/portable.py)."""
    from pathlib import Path

    from .portable import relativize_home

    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if row and row[0]:
        db = Path(row[0])
        relativize_home(con, db.parent / (db.name + ".d"))


def assign_paper_keys(con: Any, only: set[str] | None = None) -> None:
    """Give each paper identity key (all, or those in `only`) to the first stored paper that carries it."""
    import json

    from .ids import paper_keys

    rows = con.execute("SELECT id, title, attrs FROM nodes WHERE type = 'paper' ORDER BY created_at, id").fetchall()
    for pid, title, attrs in rows:
        for key in paper_keys(title, json.loads(attrs) if isinstance(attrs, str) else attrs):
            if only is None or key in only:
                con.execute("INSERT INTO paper_keys VALUES (?, ?) ON CONFLICT DO NOTHING", [key, pid])


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "graph: documents, nodes, edges, stated similarity, embeddings, keyword index, suggestions", (
        """CREATE TABLE documents (
            path         VARCHAR PRIMARY KEY,   -- absolute path the document was read from
            content_hash VARCHAR NOT NULL,      -- sha256 of its bytes
            format       VARCHAR NOT NULL,      -- structured | claim-page | novelty | summary
            title        VARCHAR,
            ingested_at  TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE nodes (
            id          VARCHAR PRIMARY KEY,    -- type:slug
            type        VARCHAR NOT NULL,
            title       VARCHAR NOT NULL,
            text        VARCHAR NOT NULL DEFAULT '',
            attrs       JSON NOT NULL DEFAULT '{}',
            text_hash   VARCHAR NOT NULL,       -- sha256 of the text the encoder sees (joins embeddings)
            source      VARCHAR,                -- provenance: document path / run folder
            source_hash VARCHAR,                -- provenance: document content hash / run config hash
            made_by     VARCHAR NOT NULL,       -- parsed | manual | accepted-suggestion | experiment
            created_at  TIMESTAMP NOT NULL,
            updated_at  TIMESTAMP NOT NULL
        )""",
        "CREATE INDEX nodes_type ON nodes(type)",
        """CREATE TABLE node_sources (         -- every document that mentions a node
            node_id VARCHAR NOT NULL,
            path    VARCHAR NOT NULL,
            PRIMARY KEY (node_id, path)
        )""",
        """CREATE TABLE edges (
            src         VARCHAR NOT NULL,
            type        VARCHAR NOT NULL,
            dst         VARCHAR NOT NULL,
            attrs       JSON NOT NULL DEFAULT '{}',
            source      VARCHAR,
            source_hash VARCHAR,
            made_by     VARCHAR NOT NULL,
            created_at  TIMESTAMP NOT NULL,
            updated_at  TIMESTAMP NOT NULL,
            PRIMARY KEY (src, type, dst)
        )""",
        "CREATE INDEX edges_dst ON edges(dst)",
        """CREATE TABLE edge_sources (
            src  VARCHAR NOT NULL,
            type VARCHAR NOT NULL,
            dst  VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            PRIMARY KEY (src, type, dst, path)
        )""",
        """CREATE TABLE stated_similarity (    -- similarity neighbours as a document states them
            node_id     VARCHAR NOT NULL,
            other_key   VARCHAR NOT NULL,       -- other_id, or 'untyped:<slug of title>' when the document gives no type
            other_id    VARCHAR,
            other_title VARCHAR NOT NULL,
            other_type  VARCHAR,
            other_text  VARCHAR NOT NULL DEFAULT '',
            score       DOUBLE,                 -- the document's cosine, where given
            source      VARCHAR,
            source_hash VARCHAR,
            created_at  TIMESTAMP NOT NULL,
            PRIMARY KEY (node_id, other_key)
        )""",
        f"""CREATE TABLE embeddings (           -- cache keyed by text hash: unchanged text is never re-encoded
            text_hash  VARCHAR NOT NULL,
            model      VARCHAR NOT NULL,
            vector     FLOAT[{EMBED_DIM}] NOT NULL,  -- L2-normalised
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (text_hash, model)
        )""",
        """CREATE TABLE node_terms (           -- keyword index for BM25 (plain SQL, incremental)
            node_id VARCHAR NOT NULL,
            term    VARCHAR NOT NULL,
            tf      INTEGER NOT NULL
        )""",
        "CREATE INDEX node_terms_term ON node_terms(term)",
        "CREATE INDEX node_terms_node ON node_terms(node_id)",
        """CREATE TABLE suggestions (
            a          VARCHAR NOT NULL,        -- the pair in sorted order
            b          VARCHAR NOT NULL,
            score      DOUBLE NOT NULL,
            duplicate  BOOLEAN NOT NULL,
            state      VARCHAR NOT NULL,        -- open | accepted | rejected
            edge_type  VARCHAR,                 -- the typed edge made on accept
            model      VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            decided_at TIMESTAMP,
            PRIMARY KEY (a, b)
        )""",
    )),
    Migration(2, "experiments: run records", (
        """CREATE TABLE runs (
            run_id        VARCHAR PRIMARY KEY,
            experiment_id VARCHAR NOT NULL,
            config_hash   VARCHAR NOT NULL,     -- spec + inputs + code version; equal hash = same computation
            status        VARCHAR NOT NULL,     -- queued | running | completed | failed | killed | timed-out
            device        VARCHAR,
            run_dir       VARCHAR NOT NULL,
            pid           INTEGER,
            host          VARCHAR,
            created_at    TIMESTAMP NOT NULL,
            started_at    TIMESTAMP,
            ended_at      TIMESTAMP,
            error         VARCHAR,
            verdict       VARCHAR,
            evidence_id   VARCHAR
        )""",
        "CREATE INDEX runs_experiment ON runs(experiment_id)",
        "CREATE INDEX runs_config ON runs(config_hash)",
    )),
    Migration(3, "paper identity keys (DOI, arXiv id, normalised title) indexed for ingest", (
        """CREATE TABLE paper_keys (
            key      VARCHAR PRIMARY KEY,       -- doi:<doi> | arxiv:<id> | title:<normalised title>
            paper_id VARCHAR NOT NULL           -- the first paper stored under that key
        )""",
        "CREATE INDEX paper_keys_paper ON paper_keys(paper_id)",
    ), backfill=assign_paper_keys),
    # The primary key (src, type, dst) serves only whole-key lookups; a document's edges are found by source.
    Migration(4, "edges indexed by source node", (
        "CREATE INDEX edges_src ON edges(src)",
    )),
    # `unlink` removes a typed edge; what was removed, and who removed it when, stays on record.
    Migration(5, "removed edges kept with their provenance and the removal's", (
        """CREATE TABLE removed_edges (
            src         VARCHAR NOT NULL,
            type        VARCHAR NOT NULL,
            dst         VARCHAR NOT NULL,
            attrs       JSON NOT NULL DEFAULT '{}',
            source      VARCHAR,                -- the edge's provenance, as it was
            source_hash VARCHAR,
            made_by     VARCHAR NOT NULL,
            written_at  TIMESTAMP,              -- when the edge was last written
            removed_by  VARCHAR NOT NULL,       -- manual (a person, via CLI or API) | parsed | experiment
            reason      VARCHAR,
            removed_at  TIMESTAMP NOT NULL
        )""",
        "CREATE INDEX removed_edges_src ON removed_edges(src)",
    )),
    Migration(6, "portable stores: run folders recorded relative to the store's folder <db>.d/", (),
              backfill=relativize_run_paths),
    # Search reads node_terms whole into its in-memory index (graph/search.py); no query looks a term up, and
    # keeping the index cost about 150 ms of each 64-document ingest commit at 100k nodes.
    Migration(7, "node_terms no longer indexed by term (search builds its own inverted index)", (
        "DROP INDEX IF EXISTS node_terms_term",
    )),
    # The (a, b) primary key's index cost about 2 s to fill and 2.4 s to commit when a first `suggest` writes 657k
    # open pairs at 100k nodes (0.9 s and 0.04 s without it), and no query needs it: a pair is looked up only by
    # accept/reject (a scan), and every writer keeps (a, b) unique itself inside its writing turn (`suggest` inserts
    # only pairs without a row, a decision updates the pair's row or inserts the one missing, an import checks).
    # DuckDB cannot drop a key, so the table is copied.
    Migration(8, "suggestions without a primary key (the writers keep each pair to one row)", (
        """CREATE TABLE suggestions_v8 (
            a          VARCHAR NOT NULL,        -- the pair in sorted order, one row per pair
            b          VARCHAR NOT NULL,
            score      DOUBLE NOT NULL,
            duplicate  BOOLEAN NOT NULL,
            state      VARCHAR NOT NULL,        -- open | accepted | rejected
            edge_type  VARCHAR,                 -- the typed edge made on accept
            model      VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            decided_at TIMESTAMP
        )""",
        "INSERT INTO suggestions_v8 SELECT a, b, score, duplicate, state, edge_type, model, created_at, decided_at "
        "FROM suggestions ORDER BY a, b",
        "DROP TABLE suggestions",
        "ALTER TABLE suggestions_v8 RENAME TO suggestions",
    )),
    # A row per node, its terms and their counts as two lists in the same order, instead of a row per (node, term):
    # at 100k nodes 1.26M rows of long node ids, whose writing, index on node_id and commit took 2.1 s of each
    # ingest against 0.7 s this way (docs/benchmarks.md, 2026-12-04); search reads them back unnested.
    Migration(9, "node_terms: one row per node (terms and their counts as lists)", (), backfill=node_terms_as_lists),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description VARCHAR NOT NULL,
    applied_at  TIMESTAMP NOT NULL
)"""
