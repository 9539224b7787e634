"""Bad input of every kind: InvalidDocument naming the file (and line where there is one); nothing written."""
from __future__ import annotations

import pytest

from claimgraph.graph import InvalidDocument, InvalidInput, NotFound
from claimgraph.ingest import detect_format, ingest_paths, parse_document, parse_text

GOOD = "papers:\n  - title: A good paper\n    claims:\n      - title: A good claim\n"


def assert_untouched(store):
    assert store.count_nodes() == {} and store.count_edges() == {} and store.documents() == []


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "a_good.yaml"
    p.write_text(GOOD)
    return p


def test_non_utf8_bytes_report_offset_and_line(store, tmp_path, good):
    bad = tmp_path / "b_latin1.txt"
    bad.write_bytes("claim\nactive\nclaim:caf\xe9".encode("latin-1"))
    with pytest.raises(InvalidDocument) as e:
        ingest_paths(store, [good, bad], embed=False)
    assert e.value.path == str(bad.resolve()) and e.value.line == 3
    assert "byte 0xe9 at offset 22" in str(e.value) and "UTF-8" in str(e.value)
    assert_untouched(store)


def test_binary_file(store, tmp_path, good):
    bad = tmp_path / "b_image.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(InvalidDocument, match="binary") as e:
        ingest_paths(store, [good, bad], embed=False)
    assert e.value.path == str(bad.resolve())
    assert_untouched(store)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_empty_file(store, tmp_path, good, content):
    bad = tmp_path / "b_empty.md"
    bad.write_bytes(content)
    with pytest.raises(InvalidDocument, match="empty") as e:
        ingest_paths(store, [tmp_path], embed=False)  # the directory expands to both files
    assert e.value.path == str(bad.resolve())
    assert_untouched(store)


def test_huge_file_and_the_size_override(store, tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "# padding\n" * 20_000)  # ~200 KB
    monkeypatch.setenv("CLAIMGRAPH_MAX_DOC_MB", "0.1")
    with pytest.raises(InvalidDocument, match="CLAIMGRAPH_MAX_DOC_MB") as e:
        ingest_paths(store, [big], embed=False)
    assert e.value.path == str(big.resolve())
    assert_untouched(store)
    monkeypatch.setenv("CLAIMGRAPH_MAX_DOC_MB", "1")
    [report] = ingest_paths(store, [big], embed=False)
    assert report.nodes_added == {"paper": 1, "claim": 1}
    monkeypatch.setenv("CLAIMGRAPH_MAX_DOC_MB", "lots")
    with pytest.raises(InvalidInput, match="CLAIMGRAPH_MAX_DOC_MB"):
        parse_document(big)


def test_bad_yaml_in_a_batch_writes_nothing(store, tmp_path, good):
    bad = tmp_path / "b_bad.yaml"
    bad.write_text("papers:\n  - title: [unclosed\n")
    with pytest.raises(InvalidDocument, match="not valid YAML") as e:
        ingest_paths(store, [tmp_path], embed=False)
    assert e.value.path == str(bad.resolve()) and e.value.line == 3
    assert_untouched(store)


def test_unrecognised_text_names_the_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("Some notes about a paper.\nNothing structured here.\n")
    with pytest.raises(InvalidDocument, match="cannot tell what kind of document") as e:
        parse_document(p)
    assert e.value.path == str(p.resolve()) and e.value.exit_code == 2
    with pytest.raises(InvalidDocument, match="cannot tell"):
        detect_format("hello", "x.md")


def test_missing_paths_and_bad_arguments(store, tmp_path, good):
    with pytest.raises(NotFound):
        ingest_paths(store, [tmp_path / "nope.yaml"], embed=False)
    with pytest.raises(InvalidInput, match="unknown format"):
        ingest_paths(store, [good], format="pdf", embed=False)
    with pytest.raises(InvalidInput, match="no paths"):
        ingest_paths(store, [], embed=False)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="holds no documents"):
        ingest_paths(store, [empty], embed=False)
    with pytest.raises(InvalidInput, match="summary"):
        ingest_paths(store, [good], title="A title for nothing", embed=False)
    assert_untouched(store)


def test_title_with_several_summaries_is_refused(store, seed, tmp_path):
    for name in ("s1.txt", "s2.txt"):
        (tmp_path / name).write_text(seed("002").read_text())
    with pytest.raises(InvalidInput, match="2 summary pages"):
        ingest_paths(store, [tmp_path], title="Some Title", embed=False)
    assert_untouched(store)


def test_wrong_forced_format_fails_cleanly(seed):
    for fmt in ("claim-page", "novelty", "summary", "structured"):
        path = seed("000") if fmt != "novelty" else seed("003")
        with pytest.raises(InvalidDocument) as e:
            parse_document(path, format=fmt, title="T")
        assert e.value.path == str(path.resolve())


TEXT_ERRORS = [
    # (format, text, line, words)
    ("claim-page", "claim\nactive\nclaim:abcNothing like abc\nDescr", 3, "cannot split the id line"),
    ("claim-page", "claim\nactive\nclaim:title-aaTitle Aa\nDesc\nSource paper\nsomething else", 6, "extracted_from(2024)"),
    ("claim-page", "claim\nclaim:aaAa\nFindings (1)\nmethod\n- x", 4, "labelled"),
    ("claim-page", "claim\nclaim:aaAa\nFindings (1)\nfinding\n- Xrefutes\u00e9", None, ""),  # no split: a bare title
    ("claim-page", "claim\nclaim:aaAa\nTopics (1)\ntopic\n- Some topicextracted_fromThe description", 5, "cannot join"),
    ("novelty", "Title\nOverview\nContribution Analysis\n[3] Orphan candidate PDF", 4, "before any contribution"),
    ("novelty", "Overview\nClaimed Contributions\nA claim.", 1, "title"),
    ("novelty", "Title\nOverview\nContribution Analysis\nHeading\n[4]  PDF", 5, "has no title"),
    ("summary", "Just a TL;DR.\nCurrent paper (gray), citations (green), references (blue)", 1, "Generated"),
]


@pytest.mark.parametrize("fmt, text, line, words", TEXT_ERRORS)
def test_page_errors_name_the_line(fmt, text, line, words):
    if line is None:  # not an error: a glued edge word followed by a lowercase letter is part of the title
        d = parse_text(text, "/p.txt", format=fmt)
        assert any(n.title == "Xrefutes\u00e9" for n in d.delta.nodes)
        return
    with pytest.raises(InvalidDocument) as e:
        parse_text(text, "/p.txt", format=fmt, title="T")
    assert e.value.path == "/p.txt" and e.value.line == line, str(e.value)
    assert words in str(e.value)


def test_unknown_claim_page_section_is_kept_with_a_warning_not_dropped():
    d = parse_text("claim\nclaim:aaAa\nWidgets (2)\n- one\n- two\nFindings (1)\n- A finding", "/p.txt",
                   format="claim-page")
    page = next(n for n in d.delta.nodes if n.id == "claim:aa")
    assert page.attrs["extra_sections"] == {"Widgets": ["- one", "- two"]}
    assert [(w.line, "Widgets" in w.message) for w in d.warnings] == [(3, True)]
    assert {n.id for n in d.delta.nodes} == {"claim:aa", "finding:a-finding"}


def test_front_matter_only_on_summaries(seed):
    text = "---\ntitle: X\n---\n" + seed("003").read_text()
    with pytest.raises(InvalidDocument, match="front matter"):
        parse_text(text, "/p.txt")
    with pytest.raises(InvalidDocument, match="unknown front matter key") as e:
        parse_text("---\ntitel: X\n---\n" + seed("002").read_text(), "/s.txt")
    assert e.value.line == 2
