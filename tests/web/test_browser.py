"""The web UI in a real headless Chromium against `claimgraph serve` on the seed store: the claim page's sections,
search and following a result, accepting a suggestion (the edge on both pages and in the CLI) and rejecting one,
and a title made of markup rendered as text."""
from __future__ import annotations

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from claimgraph.graph import Store

from .conftest import CLAIM, SCRIPT_ID, SCRIPT_TITLE, cli


def css(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector)


def csss(driver, selector):
    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait_path(driver, prefix: str):
    WebDriverWait(driver, 30).until(lambda d: httpx.URL(d.current_url).path.startswith(prefix))


def test_seed_claim_page_has_every_section(served, browser):
    browser.get(f"{served.url}/node/{CLAIM}")
    assert css(browser, "#title").text.startswith("Learned features reflect the functionality of the model")
    assert css(browser, "#node-id").text.replace("\n", "") == CLAIM
    assert css(browser, "#header .type").text == "claim"
    assert css(browser, "#status").text.startswith("untested")  # derived: no evidence yet
    assert "page status: active" in css(browser, "#status").text
    assert "logit effects and ablations" in css(browser, "#description").text
    source = css(browser, "#source").text
    assert "Source paper" in source and "(2024) · Marc Carauleanu · Michael Vaiana" in source and "+1" in source
    hood = css(browser, "#neighbourhood")
    assert "Neighborhood — ranked by edge-count" in hood.text
    groups = [h.text for h in hood.find_elements(By.CSS_SELECTOR, "h3.group")]
    assert groups == ["Claims (1)", "Findings (3)", "Methods (3)"]  # the claim is the markup-titled one
    first = hood.find_elements(By.CSS_SELECTOR, "ul.neighbours")[1].find_element(By.TAG_NAME, "li")
    # the most connected finding first
    assert first.text.startswith("Dictionary learning on model with randomly shuffled weights")
    assert {e.text for e in first.find_elements(By.CSS_SELECTOR, ".edge")} == {"← associated_with", "← supports"}
    assert "Evidence (0)" in css(browser, "#evidence").text and "Untested" in css(browser, "#evidence").text
    similar = css(browser, "#similar")
    assert "Related by similarity" in similar.text and "cosine ≥ 0.65 · no typed edge" in similar.text
    rows = similar.find_elements(By.CSS_SELECTOR, "li")
    stated = [r for r in rows if "what metrics can reliably tell us" in r.text]
    assert stated and "0.794" in stated[0].text and "stated" in stated[0].text
    assert all(not a.get_attribute("href").endswith("/None") for a in similar.find_elements(By.CSS_SELECTOR, "a"))
    # the stable link of a neighbour, then its graph view
    first.find_element(By.CSS_SELECTOR, "a").click()
    wait_path(browser, "/node/finding:")
    css(browser, "#graph-link").click()
    wait_path(browser, "/node/finding:")
    labels = [a.get_attribute("data-id") for a in csss(browser, "svg#graph a.gnode")]
    assert CLAIM in labels and len(labels) >= 2
    # the JSON twin is what `show --json` prints
    twin = httpx.get(f"{served.url}/node/{CLAIM}.json").json()
    assert twin == cli(served.db, "show", CLAIM)


def test_search_with_a_type_filter_and_follow_a_result(served, browser):
    browser.get(f"{served.url}/search")
    box = css(browser, "#search-form input[name=q]")
    box.send_keys("features of models with shuffled weights")
    Select(css(browser, "#type-filter")).select_by_value("finding")
    css(browser, "#search-form button").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr.result"))
    rows = csss(browser, "#results tr.result")
    assert all(r.find_element(By.CSS_SELECTOR, ".type").text == "finding" for r in rows)
    top = rows[0]
    assert top.get_attribute("data-id").startswith("finding:dictionary-learning-on-model-with-randomly-shuffled")
    title = top.find_element(By.CSS_SELECTOR, "a").text
    top.find_element(By.CSS_SELECTOR, "a").click()
    wait_path(browser, "/node/finding:")
    assert css(browser, "#title").text == title
    twin = httpx.get(f"{served.url}/search.json", params={"q": "features of models with shuffled weights",
                                                          "type": "finding", "k": 20}).json()
    assert twin == cli(served.db, "search", "features of models with shuffled weights", "--type", "finding", "-k", "20")


def _row(browser, a: str, b: str):
    rows = [r for r in csss(browser, "tr.suggestion") if (r.get_attribute("data-a"), r.get_attribute("data-b")) == (a, b)]
    return rows[0] if rows else None


def test_accept_a_suggestion_with_a_chosen_edge_type(served, browser):
    browser.get(f"{served.url}/suggestions?type=claim")
    row = csss(browser, "tr.suggestion")[0]
    a, b = row.get_attribute("data-a"), row.get_attribute("data-b")
    Select(row.find_element(By.CSS_SELECTOR, "select[name=edge]")).select_by_value("supports:ba")  # B supports A
    row.find_element(By.CSS_SELECTOR, ".accept-button").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "flash"))
    assert css(browser, "#flash").text == f"added {b} -supports-> {a}"
    assert _row(browser, a, b) is None  # no longer open
    for here, there, label in ((a, b, "← supports"), (b, a, "supports")):
        browser.get(f"{served.url}/node/{here}")
        item = css(browser, f'#neighbourhood li[data-id="{there}"]')
        assert label in [e.text for e in item.find_elements(By.CSS_SELECTOR, ".edge")]
    edge = next(n for n in cli(served.db, "show", a)["neighbors"] if n["id"] == b)
    assert (edge["edge"], edge["direction"]) == ("supports", "in")
    hops = cli(served.db, "neighbors", b, "--edge", "supports")["nodes"]
    assert any(h["id"] == a and h["edge"] == "supports" for h in hops)
    with Store(served.db, read_only=True) as s:  # provenance as the CLI's accept writes it
        e = s.get_edge(b, "supports", a)
    assert e.provenance.made_by.value == "accepted-suggestion" and "similarity" in e.attrs


def test_reject_a_suggestion_and_it_is_gone(served, browser):
    browser.get(f"{served.url}/suggestions")
    row = csss(browser, "tr.suggestion")[1]
    a, b = row.get_attribute("data-a"), row.get_attribute("data-b")
    row.find_element(By.CSS_SELECTOR, ".reject-button").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "flash"))
    assert css(browser, "#flash").text == f"rejected {a} ~ {b}"
    assert _row(browser, a, b) is None
    browser.refresh()
    assert _row(browser, a, b) is None
    assert not [x for x in httpx.get(f"{served.url}/suggestions.json", params={"limit": 10_000}).json()["suggestions"]
                if (x["src"], x["dst"]) == (a, b)]
    again = cli(served.db, "suggest", "--threshold", "0.6")["suggestions"]  # recomputed: never proposed again
    assert (a, b) not in {(x["src"], x["dst"]) for x in again} and again


def test_a_title_made_of_markup_renders_as_text(served, browser):
    for path in (f"/node/{SCRIPT_ID}", "/", "/nodes?type=claim", f"/node/{CLAIM}",
                 "/search?q=Features+are+and+stay+text"):
        browser.get(served.url + path)
        assert browser.execute_script("return window.pwned === undefined"), path
        assert browser.title != "pwned"
        assert not csss(browser, "main script") and not csss(browser, "main img[src=x]")
        assert SCRIPT_TITLE in css(browser, "main").text, path
    browser.get(f"{served.url}/node/{SCRIPT_ID}")
    assert css(browser, "#title").text == SCRIPT_TITLE
    assert '<img src=x onerror="window.pwned = 2">' in css(browser, "#description").text
    assert "&lt;script&gt;" in browser.page_source
