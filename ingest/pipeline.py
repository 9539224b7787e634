"""From files to the store: read, detect, parse every document first, then apply each in its own transaction."""
from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from claimgraph.graph.errors import ClaimgraphError, InvalidDocument, InvalidInput, StoreError
from claimgraph.graph.ids import make_id, normalize_title, paper_id, sha256_hex
from claimgraph.graph.models import ApplyReport, DocumentRef, GraphDelta, IngestWarning, Node, NodeType
from claimgraph.graph.store import BulkApply, Store, text_hash

from .builder import quote
from .claim_page import parse_claim_page
from .detect import FORMATS, detect_format
from .novelty import parse_novelty
from .source import expand_paths, numbered_lines, read_source, split_front_matter
from .structured import parse_structured
from .summary import parse_summary


class ParsedDocument(BaseModel):
    """One parsed document: what to record it as, and the graph it describes."""

    ref: DocumentRef
    delta: GraphDelta
    external_refs: dict[str, int | None] = Field(
        default_factory=dict, description="Edge ends the document refers to but does not define -> line of first use")
    external_papers: dict[str, str] = Field(
        default_factory=dict, description="Of those, papers referred to by title -> that title")
    warnings: list[IngestWarning] = Field(default_factory=list, description="What the document left ambiguous")


def parse_text(text: str, path: str, *, format: str = "auto", title: str | None = None,
               content_hash: str | None = None) -> ParsedDocument:
    """Parse a document's text (see parse_document); `path` names it in errors and provenance."""
    if format != "auto" and format not in FORMATS:
        raise InvalidInput(f"unknown format {format!r}; choose auto, {', '.join(FORMATS)}")
    fmt = detect_format(text, path) if format == "auto" else format
    external_papers: dict[str, str] = {}
    try:
        if fmt == "structured":
            b, external_papers, doc_title = parse_structured(text, path)
        else:
            meta, body, offset = split_front_matter(text, path)
            if meta and fmt != "summary":
                raise InvalidDocument("a front matter block is read only on summary pages; remove it", path=path, line=1)
            lines = numbered_lines(body, offset)
            if not lines:
                raise InvalidDocument("has nothing after its front matter", path=path)
            if fmt == "claim-page":
                b, doc_title = parse_claim_page(lines, path)
            elif fmt == "novelty":
                b, doc_title = parse_novelty(lines, path)
            else:
                b, doc_title = parse_summary(lines, path, title=title, meta=meta)
        delta = b.build()
    except ValidationError as e:  # a record the parser built did not validate: report, never crash
        raise InvalidDocument(f"{e.errors()[0]['msg']}", path=path) from None
    ref = DocumentRef(path=path, content_hash=content_hash or sha256_hex(text), format=fmt, title=doc_title)
    return ParsedDocument(ref=ref, delta=delta, external_refs=b.external_refs(),
                          external_papers={k: v for k, v in external_papers.items() if k in b.external_refs()},
                          warnings=b.warnings)


def parse_document(path: str | os.PathLike, *, format: str = "auto", title: str | None = None) -> ParsedDocument:
    """Read one document file and parse it into a GraphDelta (nothing is written).

    `format` is `auto` (detect) or one of structured, claim-page, novelty, summary; `title` names the
    paper of a summary page (which has none of its own) and is ignored for other kinds.
    """
    src = read_source(path)
    return parse_text(src.text, src.path, format=format, title=title, content_hash=src.content_hash)


# documents per write transaction: the 100k benchmark's writing took 14.8-17.1 s with 256 against 17.3-18.2 s with
# 64 (fewer statements and commits, each with a fixed cost); with a stand-in encoder (the writer's own time only),
# 1024 took 26.5-27.8 s in all against 28.5-32.3 s for 256 and 29.4-29.6 s for 4096 (docs/benchmarks.md); a
# waiting command still gets in after the document at hand (should_yield)
APPLY_BATCH = 1024


def ingest_paths(store: Store, paths: Sequence[str | os.PathLike], *, format: str = "auto", title: str | None = None,
                 embed: bool = True, progress: bool | None = None) -> list[ApplyReport]:
    """Ingest document files and directories; one ApplyReport per document, in the order applied.

    Directories expand to their *.yaml *.yml *.json *.txt *.md files (sorted, recursive). Every document
    is read, parsed and checked first, so a bad one fails the command before anything is written. Then
    they are applied, each all or nothing, in groups of APPLY_BATCH per transaction, documents that refer
    to nodes of others after those. With
    `embed`, node texts the store lacks are encoded first (the database is let go meanwhile); `progress`
    shows the encoder's progress bar (None: only for long work on a terminal).
    """
    return ingest_documents(store, read_documents(paths, format=format, title=title), embed=embed, progress=progress)


def read_documents(paths: Sequence[str | os.PathLike], *, format: str = "auto",
                   title: str | None = None) -> list[ParsedDocument]:
    """Every document of `paths` (directories expanded as in `ingest_paths`) read, parsed and checked, without
    the store: the first bad one raises InvalidDocument (file, line, field) before anything is opened or written."""
    files = expand_paths(paths)
    docs = [parse_document(f, format=format, title=title) for f in files]
    if title is not None:
        summaries = [d.ref.path for d in docs if d.ref.format == "summary"]
        if len(summaries) > 1:
            raise InvalidInput(f"--title names one paper, but {len(summaries)} summary pages were given "
                               f"({', '.join(Path(s).name for s in summaries)}); ingest them one at a time")
        if not summaries:
            raise InvalidInput("--title applies to summary pages, and none was given; leave it out")
    return docs


def ingest_documents(store: Store, docs: list[ParsedDocument], *, embed: bool = True,
                     progress: bool | None = None) -> list[ApplyReport]:
    """Apply documents that `read_documents` parsed, as `ingest_paths` does."""
    embedder = None
    if embed:
        from claimgraph.graph.embed import get_embedder

        embedder = get_embedder()
    vectors: dict[str, Any] = {}
    with store.session():  # a reading turn plans; the encoder runs after it (vectors_for lets go of the store)
        order, aliases = _plan(store, docs)
        if embedder is not None:
            # one encoder pass over every new text of the batch (large batches, and the store is let go meanwhile)
            from claimgraph.graph.embed import vectors_for

            stored = {d.path: d.content_hash for d in store.documents()}
            changed = [d for d in docs if stored.get(d.ref.path) != d.ref.content_hash]
            vectors = vectors_for(store, [n for d in changed for n in d.delta.nodes], embedder=embedder,
                                  progress=progress)
    reports: list[ApplyReport] = []  # filled as documents are committed, so a failure can say which were
    try:
        with store.session(write=True):  # then a writing turn applies, a transaction per group of documents
            _apply_all(store, docs, order, aliases, vectors, embedder, reports)
    except StoreError as e:
        if not reports:
            raise
        raise _partly_written(e, reports, [docs[i] for i in order]) from None
    return reports


def _apply_all(store: Store, docs: list[ParsedDocument], order: list[int], aliases: list[dict[str, str]],
               vectors: dict[str, Any], embedder: Any, reports: list[ApplyReport]) -> None:
    """Apply the documents in `order`, each all or nothing, appending each committed one's report to `reports`.

    Documents go in groups of APPLY_BATCH per transaction, written in bulk (`Store.bulk`: each document
    checked completely, in order, then the group's rows written with one insert per table; at 100k nodes a
    statement per table per document was half the ingest). Each document stays all or nothing: a document
    refused leaves the group's earlier documents intact, and they are committed before the error is raised;
    any other error rolls the group back and the group is applied again a document per transaction
    (`Store.apply`), so the failing document fails alone, as it would have. A group ends early when another
    command has waited for the store (`Store.should_yield`): it is committed and the turn handed on, so
    grouping buys throughput without making others wait for a whole group."""
    remapped: dict[str, str] = {}  # paper ids of applied documents -> the stored paper they were merged into
    model = embedder.model_name if embedder is not None else None

    def apply_one(i: int, bulk: BulkApply | None = None) -> ApplyReport:
        doc = docs[i]
        delta = _rename(doc.delta, {**remapped, **{k: remapped.get(v, v) for k, v in aliases[i].items()}})
        if bulk is not None and bulk.touches(delta, doc.ref):
            bulk.flush()  # it names what queued documents write: write those first, so the lookups below see them
        look: Store | BulkApply = bulk if bulk is not None else store
        resolved = look.resolve_papers(delta)
        for before, after in zip(delta.nodes, resolved.nodes):
            if before.id != after.id:
                remapped[before.id] = after.id
        delta, merged = _note_retitled(look, delta, resolved, doc.ref.path)
        mine = {h: vectors[h] for h in {text_hash(n) for n in delta.nodes} if h in vectors}
        report = look.apply(delta, doc.ref, vectors=mine, model=model)
        report.warnings = doc.warnings + merged
        return report

    pos = 0
    while pos < len(order):
        group = order[pos:pos + APPLY_BATCH]
        saved = dict(remapped)
        done: list[ApplyReport] = []
        refused: InvalidDocument | None = None
        attempted = 0
        try:
            with store.bulk(model) as bulk:  # one transaction; the queued documents are written at its end
                bulk.prefetch([docs[i].delta for i in group], [docs[i].ref.path for i in group])
                for i in group:
                    attempted += 1
                    try:
                        done.append(apply_one(i, bulk))
                    except InvalidDocument as e:
                        refused = e
                        break
                    if store.should_yield():  # someone is waiting: commit the group so far and let them in
                        break
        except ClaimgraphError:  # rolled back: replay the group a document at a time
            remapped.clear()
            remapped.update(saved)
            for i in group[:attempted]:  # one transaction each: the error fails its own document only
                reports.append(apply_one(i))
                store.yield_turn()
            pos += attempted
            continue
        reports.extend(done)  # committed
        if refused is not None:
            raise refused
        pos += attempted
        store.yield_turn()  # a long ingest lets a waiting command in between groups


def _partly_written(e: StoreError, reports: list[ApplyReport], docs: list[ParsedDocument]) -> StoreError:
    """A write failure after some documents were written: say which were, which was not, and what to do
    (`docs` in the order they were applied)."""
    done = {r.path for r in reports}
    failed = next((d.ref.path for d in docs if d.ref.path not in done), "the next document")
    written = [r.path for r in reports if not r.unchanged]
    names = ", ".join(Path(p).name for p in written[:5]) + (", ..." if len(written) > 5 else "")
    return StoreError(
        f"{failed} was not written ({str(e).replace(', nothing was written', '')}); {len(reports)} of {len(docs)} "
        f"documents given were applied before it, {len(written)} of them with changes ({names}), and "
        f"{len(docs) - len(reports)} were not; fix the cause and run the same command again: documents already "
        "written are skipped as unchanged")


def _note_retitled(store: Store | BulkApply, delta: GraphDelta, resolved: GraphDelta,
                   path: str) -> tuple[GraphDelta, list[IngestWarning]]:
    """Warn where a node this document defines is already stored, from another document, under another title
    (an explicit id or DOI given twice); for papers the earlier title is kept in attrs.other_titles."""
    # Only a node whose id does not come from its own title (an explicit id, a DOI or arXiv id, a paper merged
    # into a stored one) can meet a stored node of another title: the others are not looked up.
    derived = lambda n: paper_id(title=n.title) if n.type == NodeType.paper and normalize_title(n.title) \
        else make_id(n.type, n.title)
    stored = store.get_nodes({n.id for n in resolved.nodes if n.id != derived(n)})
    warnings: list[IngestWarning] = []
    nodes = []
    for before, n in zip(delta.nodes, resolved.nodes):
        old = stored.get(n.id)
        same = old is None or normalize_title(old.title) == normalize_title(n.title) \
            or (old.provenance is not None and old.provenance.source == path) \
            or not (old.attrs.get("title_known", True) and n.attrs.get("title_known", True))
        if not same:
            assert old is not None
            src = old.provenance.source if old.provenance else "an earlier ingest"
            if n.type == NodeType.paper:
                others = sorted({*old.attrs.get("other_titles", []), old.title} - {n.title})
                before = before.model_copy(update={"attrs": {**before.attrs, "other_titles": others}})
                warnings.append(IngestWarning(path=path, message=(
                    f"paper {n.id} (same {'DOI' if n.attrs.get('doi') else 'arXiv id' if n.attrs.get('arxiv') else 'id'}) "
                    f"was titled {quote(old.title)} by {src}; this document titles it {quote(n.title)}; merged into one "
                    "paper under the new title, the earlier one kept in attrs.other_titles")))
            else:
                warnings.append(IngestWarning(path=path, message=(
                    f"{n.id} was titled {quote(old.title)} by {src}; this document gives the same id the title "
                    f"{quote(n.title)}; the node now has the new title")))
        nodes.append(before)
    return delta.model_copy(update={"nodes": nodes}), warnings


def _rename(delta: GraphDelta, mapping: dict[str, str]) -> GraphDelta:
    """Rewrite edge ends that refer to other documents' or stored nodes under their final ids."""
    if not mapping:
        return delta
    own = {n.id for n in delta.nodes}
    r = lambda x: x if x in own else mapping.get(x, x)
    return delta.model_copy(update={"edges": [e.model_copy(update={"src": r(e.src), "dst": r(e.dst)})
                                              for e in delta.edges]})


def _plan(store: Store, docs: list[ParsedDocument]) -> tuple[list[int], list[dict[str, str]]]:
    """Application order (a document after those defining nodes it refers to) and per-document ref aliases.

    Every ref a document does not define must be defined by another document of the batch or be in the
    store; a paper referred to by title may also match a paper elsewhere by normalised title.
    """
    defined: dict[str, int] = {}
    by_title: dict[str, tuple[int, str]] = {}
    for i, d in enumerate(docs):
        for n in d.delta.nodes:
            defined.setdefault(n.id, i)
            if n.type == NodeType.paper and n.attrs.get("title_known", True):
                by_title.setdefault(n.attrs.get("title_norm") or normalize_title(n.title), (i, n.id))
    deps: list[set[int]] = [set() for _ in docs]
    aliases: list[dict[str, str]] = [{} for _ in docs]
    stored_refs = set(store.get_nodes({r for d in docs for r in d.external_refs if r not in defined}))
    for i, d in enumerate(docs):
        for ref, line in d.external_refs.items():
            if ref in defined:
                deps[i].add(defined[ref])
                continue
            if ref in stored_refs:
                continue
            ref_title = d.external_papers.get(ref)
            if ref_title is not None:
                hit = by_title.get(normalize_title(ref_title))
                if hit is not None:
                    deps[i].add(hit[0])
                    aliases[i][ref] = hit[1]
                    continue
                probe = Node(id=ref, type=NodeType.paper, title=ref_title,
                             attrs={"title_norm": normalize_title(ref_title)})
                stored = store.resolve_papers(GraphDelta(nodes=[probe])).nodes[0].id
                if stored != ref:
                    aliases[i][ref] = stored
                    continue
            raise InvalidDocument(f"refers to {ref}, which is neither defined in this document, nor in the other "
                                  "documents given, nor in the store; define it, or ingest the document that "
                                  "does first", path=d.ref.path, line=line)
    # Kahn's algorithm, taking the earliest given document among those ready
    waiting = [len(deps[i] - {i}) for i in range(len(docs))]
    users: list[list[int]] = [[] for _ in docs]
    for i, ds in enumerate(deps):
        for j in ds - {i}:
            users[j].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(docs):
        stuck = [docs[i].ref.path for i in range(len(docs)) if waiting[i] > 0]
        raise InvalidDocument("these documents refer to each other's nodes in a cycle, so none can be applied "
                              "first: " + ", ".join(stuck) + "; move the cross-references into one of them",
                              path=stuck[0])
    return order, aliases
