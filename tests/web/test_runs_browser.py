"""Experiments, runs and feature pages in the browser: one tiny `sae` run on toy:tiny (trained + shuffled SAEs,
one seed) testing the seed claim, shared by the tests here. The claim page's evidence links to the run; the run
page shows status, decision, log tail and its PNG plots (loaded); a feature page shows the dashboard sections
with its images loaded."""
from __future__ import annotations

import shutil

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import CLAIM, Server, cli

SAE_PARAMS = dict(steps=150, batch_size=128, train_tokens=4096, eval_tokens=1024, ce_tokens=512, log_every=50,
                  control="shuffled")


@pytest.fixture(scope="module")
def run_store(seed_store, tmp_path_factory):
    """The seed store with a completed tiny `sae` experiment on the seed claim (evidence attached)."""
    db = tmp_path_factory.mktemp("web-run") / "g.duckdb"
    shutil.copy(seed_store, db)
    params = [a for k, v in SAE_PARAMS.items() for a in ("--param", f"{k}={v}")]
    exp = cli(db, "experiment", "add", "--claim", CLAIM, "--kind", "sae", "--model", "toy:tiny", "--data",
              "synthetic:tiny", "--seeds", "1", "--device", "cpu", "--id", "experiment:tiny-sae-shuffled-control",
              *params)["experiment"]["id"]
    out = cli(db, "run", exp)
    assert out["status"] == "completed"
    return db, exp, out["run_id"]


@pytest.fixture(scope="module")
def run_server(run_store):
    srv = Server(run_store[0])
    yield srv
    srv.stop()


def images_loaded(driver, selector: str) -> list[str]:
    """src of every matching <img> once all have finished loading; fails on a broken one."""
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        f"return Array.from(document.querySelectorAll({selector!r})).every(i => i.complete)"))
    imgs = driver.find_elements(By.CSS_SELECTOR, selector)
    broken = [i.get_attribute("src") for i in imgs if driver.execute_script("return arguments[0].naturalWidth", i) == 0]
    assert not broken, f"images that did not load: {broken}"
    return [i.get_attribute("src") for i in imgs]


@pytest.mark.slow
def test_claim_evidence_links_to_a_run_page_with_its_plots(run_store, run_server, browser):
    db, exp, run_id = run_store
    browser.get(f"{run_server.url}/node/{CLAIM}")
    status = browser.find_element(By.ID, "status").text
    ev = browser.find_element(By.CSS_SELECTOR, "#evidence tbody tr")
    cells = [c.text for c in ev.find_elements(By.TAG_NAME, "td")]
    shown = cli(db, "evidence", CLAIM)
    verdict = shown["evidence"][0]["verdict"]
    # one seed: an "insufficient seeds" inconclusive, listed but not deciding (issue 13)
    decisive = shown["evidence"][0]["decisive"]
    assert status.startswith(shown["status"]) and cells[0] == verdict + ("" if decisive else " not deciding")
    mean = shown["evidence"][0]["decision"]["mean"]
    assert cells[1] == f"{mean:.3g}" and cells[3] == "1" and "one seed" in cells[2]
    assert "single_token_frac_common_diff > 0.1 ± 0.05" in cells[4]
    ev.find_element(By.CSS_SELECTOR, "a.run-link").click()
    WebDriverWait(browser, 30).until(lambda d: f"/run/{run_id}" in d.current_url)
    assert browser.find_element(By.ID, "run-status").text == "completed"
    assert verdict in browser.find_element(By.ID, "decision").text
    assert "single_token_frac_common_diff" in browser.find_element(By.CSS_SELECTOR, "#decision tr.criterion-metric").text
    assert browser.find_element(By.ID, "log-tail").text.strip()
    srcs = images_loaded(browser, "#plots img.plot")
    assert srcs and all(s.endswith(".png") for s in srcs)
    twin = httpx.get(f"{run_server.url}/run/{run_id}.json").json()
    assert twin["run"]["run_id"] == run_id and twin["result"]["decision"]["verdict"] == verdict
    assert len(twin["images"]) == len(srcs)
    browser.get(f"{run_server.url}/experiments")
    assert run_id in browser.find_element(By.CSS_SELECTOR, "table.experiments").text
    browser.get(f"{run_server.url}/node/{exp}")
    assert run_id in browser.find_element(By.ID, "runs").text
    assert "single_token_frac_common_diff" in browser.find_element(By.ID, "spec").text


@pytest.mark.slow
def test_feature_page_in_the_dashboard_layout(run_store, run_server, browser):
    db, _, run_id = run_store
    feature = None
    for n in range(12):  # the first latent that fires on the page's sample
        page = httpx.get(f"{run_server.url}/run/{run_id}/feature/{n}.json", timeout=300).json()
        if page["n_firing"] > 0:
            feature = n
            break
    assert feature is not None, "no live latent among the first 12"
    assert page == cli(db, "feature", run_id, str(feature))  # the JSON twin is `claimgraph feature --json`
    browser.get(f"{run_server.url}/run/{run_id}")
    box = browser.find_element(By.ID, "feature-index")
    box.clear()
    box.send_keys(str(feature))
    browser.find_element(By.CSS_SELECTOR, "#feature-form button").click()
    WebDriverWait(browser, 300).until(lambda d: d.find_elements(By.ID, "top-activations"))
    assert httpx.URL(browser.current_url).path == f"/run/{run_id}/feature/{feature}"
    assert "seed 0, trained" in browser.find_element(By.ID, "feature-header").text
    assert browser.find_element(By.CSS_SELECTOR, "#feature-header h1").text == f"Feature {feature}"
    assert f"{page['density'] * 100:.3f}%" in browser.find_element(By.ID, "density").text
    ctxs = browser.find_elements(By.CSS_SELECTOR, "#top-activations .ctx")
    assert len(ctxs) == len(page["top_contexts"]) > 0
    first = page["top_contexts"][0]
    highlighted = ctxs[0].find_element(By.CSS_SELECTOR, ".tok.max")
    assert highlighted.get_attribute("title").startswith(first["tokens"][first["pos"] - first["start"]] + ":")
    assert "a10" in highlighted.get_attribute("class")  # the top context's maximum is the page's maximum
    neg = browser.find_elements(By.CSS_SELECTOR, "#negative-logits tbody tr")
    pos = browser.find_elements(By.CSS_SELECTOR, "#positive-logits tbody tr")
    assert len(neg) == len(page["logits"]["bottom"]) and len(pos) == len(page["logits"]["top"]) > 0
    assert f"{page['logits']['top'][0]['value']:+.3f}" in pos[0].text
    labels = browser.find_elements(By.CSS_SELECTOR, "#labels tbody tr")
    assert len(labels) == len(page["labels"]) > 0 and page["labels"][0]["label"] in labels[0].text
    srcs = images_loaded(browser, "#density-plot, #logits-plot")
    assert len(srcs) == 2
    browser.get(f"{run_server.url}/run/{run_id}")  # the computed page is listed on the run page, its PNGs are not plots
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#features a.feature-page-link")]
    assert any(httpx.URL(h).path == f"/run/{run_id}/feature/{feature}" for h in links)
    assert not [s for s in images_loaded(browser, "#plots img.plot") if "/features/" in s]
