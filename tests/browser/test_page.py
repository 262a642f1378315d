"""The analysts' page and a `stance report` in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium against the real `stance serve` binary.

It loads `/`, pastes the fixture article, scores it, and checks that every mention the JSON API
reports is highlighted with its actor and label, that each actor card shows the API's score
and label counts, that the evidence links move the focus to their sentence, and that the page
logged no errors (e.g. a Content-Security-Policy refusal). It also scores the report fixture
corpus with `stance batch`, builds its report and checks the charts and tables rendered.
Screenshots go to target/browser/.

Run by .ci/run: STANCE_BIN=target/release/stance python -m pytest -q tests/browser
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "browser"
FIXTURE = ROOT / "tests" / "fixtures" / "article.txt"
MODEL = ROOT / "models" / "minilm-l6-stance"


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("STANCE_BIN", str(ROOT / "target" / "release" / "stance"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCE_")}
    env.update({"STANCE_MODEL": str(MODEL), "RUST_LOG": "warn"})
    proc = subprocess.Popen(
        [binary, "serve", "--addr", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        base = "http://" + line.removeprefix("listening on ")
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health") as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as e:
                assert e.code == 503, e.code
            except urllib.error.URLError:
                pass
            assert time.time() < deadline, "the server was not serving after 60 s"
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chromedriver():
    for name in ("chromedriver", "/usr/lib/chromium/chromedriver"):
        path = shutil.which(name) or (name if os.path.exists(name) else None)
        if path:
            return path
    pytest.fail("chromedriver not found: install Debian's chromium-driver (apt-get install chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000"):
        opts.add_argument(arg)
    chromium = shutil.which("chromium")
    if chromium:
        opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver()), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def api_score(base, article):
    req = urllib.request.Request(
        base + "/v1/score", data=json.dumps(article).encode(), headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def fmt(x):
    # The page's signed two-decimal score: a true minus sign, the sign of the rounded value.
    r = round(x, 2)
    return ("+" if r >= 0 else "\u2212") + f"{abs(r):.2f}"


def severe_logs(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_page_highlights_the_apis_mentions_and_cards(server, browser):
    OUT.mkdir(parents=True, exist_ok=True)
    text = FIXTURE.read_text()
    browser.get(server + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("Model "))

    area = browser.find_element(By.ID, "article")
    # Pasted, as a reader would: the text lands in the box in one piece.
    browser.execute_script("arguments[0].focus();", area)
    browser.execute_cdp_cmd("Input.insertText", {"text": text})
    assert area.get_property("value") == text
    # Submitted from the keyboard (Ctrl+Enter), no page reload.
    browser.execute_script("window.__same_page = true;")
    area.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(ec.visibility_of_element_located((By.ID, "results")))
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Scored "))
    assert browser.execute_script("return window.__same_page === true;"), "the page reloaded"

    want = api_score(server, {"id": "", "text": text})

    # Sentences, each with its sentiment label beside it.
    rows = browser.find_elements(By.CSS_SELECTOR, "#text > li.sentence")
    assert len(rows) == len(want["sentences"])
    for row, s in zip(rows, want["sentences"]):
        assert row.get_attribute("id") == f"s-{s['index']}"
        side = row.find_element(By.CSS_SELECTOR, ".sentiment")
        assert side.get_attribute("data-label") == s["sentiment"]["label"]
        assert fmt(s["sentiment"]["score"]) in side.text

    # Every mention span highlighted, with the actor and label of the API's answer.
    marks = browser.find_elements(By.CSS_SELECTOR, "mark.mention")
    got = {(int(m.get_attribute("data-start")), int(m.get_attribute("data-end"))): m for m in marks}
    expected = {}
    for s in want["sentences"]:
        for a in s["actors"]:
            for m in a["mentions"]:
                expected.setdefault((m["char_start"], m["char_end"]), (a["actor"], a["label"], m["text"]))
    assert expected, "the fixture mentions actors"
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for span, (actor, label, words) in expected.items():
        m = got[span]
        assert m.get_attribute("data-actor") == actor
        assert m.get_attribute("data-label") == label
        assert label in m.get_attribute("class").split()
        assert m.text.startswith(words), (m.text, words)
    # Probabilities on focus (keyboard), not only on hover.
    first = marks[0]
    tip = first.find_element(By.CSS_SELECTOR, ".tip")
    assert not tip.is_displayed()
    browser.execute_script("arguments[0].focus();", first)
    assert tip.is_displayed()
    assert re.search(r"negative \d+% · neutral \d+% · positive \d+%", tip.text), tip.text
    browser.save_screenshot(str(OUT / "page-tooltip.png"))

    # One card per actor: score, label and counts as the API says.
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    assert [c.get_attribute("data-actor") for c in cards] == [a["actor"] for a in want["actors"]]
    for card, a in zip(cards, want["actors"]):
        score = card.find_element(By.CSS_SELECTOR, ".score")
        assert score.text == f"{fmt(a['score'])} {a['label']}"
        counts = card.find_element(By.CSS_SELECTOR, ".counts").get_attribute("data-counts")
        assert counts == f"{a['negative']}/{a['neutral']}/{a['positive']}"
        # The evidence links jump to their sentence and move the focus there.
        for what, key in (("most negative", "most_negative"), ("most positive", "most_positive")):
            link = card.find_element(By.CSS_SELECTOR, f'a[data-evidence="{what}"]')
            assert link.get_attribute("href").endswith(f"#s-{a['evidence'][key]}")
            link.click()
            active = browser.execute_script("return document.activeElement.id;")
            assert active == f"s-{a['evidence'][key]}"
        mentioning = [s["index"] for s in want["sentences"] if any(x["actor"] == a["actor"] for x in s["actors"])]
        links = card.find_elements(By.CSS_SELECTOR, ".evidence a:not([data-evidence])")
        assert [int(l.get_attribute("href").rsplit("-", 1)[1]) for l in links] == mentioning

    # The whole page, as tall as it is, once the jumps' brief highlights are over.
    WebDriverWait(browser, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".sentence.flash"))
    browser.execute_script("window.scrollTo(0, 0);")
    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1440, max(1000, height + 140))
    browser.save_screenshot(str(OUT / "page.png"))
    browser.set_window_size(1440, 1000)
    assert severe_logs(browser) == []


def test_page_reports_a_bad_record_and_request_actors(server, browser):
    browser.get(server + "/")
    area = browser.find_element(By.ID, "article")
    area.send_keys('{"id": "x", "txt": "no text field"}')
    browser.find_element(By.ID, "score").click()
    error = WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "error")))
    assert 'needs a "text" string' in error.text
    # The server's own message for a bad article, shown in place.
    area.clear()
    area.send_keys('{"id": "y", "text": "   "}')
    browser.find_element(By.ID, "score").click()
    WebDriverWait(browser, 30).until(lambda d: "the text is empty" in d.find_element(By.ID, "error").text)
    assert "HTTP 400, invalid_argument" in browser.find_element(By.ID, "error").text
    # Actors of one's own replace the server's.
    area.clear()
    area.send_keys("The Kremlin welcomed the talks. Paris stayed silent.")
    browser.find_element(By.ID, "actors").send_keys("France: Paris")
    browser.find_element(By.ID, "score").click()
    WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "results")))
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cards .card"))
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    assert [c.get_attribute("data-actor") for c in cards] == ["France"]
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert [e for e in severe_logs(browser) if "400" not in e["message"]] == []


def test_report_renders_its_charts_and_tables(browser, tmp_path):
    OUT.mkdir(parents=True, exist_ok=True)
    binary = os.environ.get("STANCE_BIN", str(ROOT / "target" / "release" / "stance"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCE_")}
    env["STANCE_MODEL"] = str(MODEL)
    scores = tmp_path / "scores.jsonl"
    report = OUT / "report.html"
    subprocess.run([binary, "batch", str(ROOT / "tests/fixtures/report/articles.jsonl"), "-o", str(scores)],
                   cwd=ROOT, env=env, check=True)
    subprocess.run([binary, "report", str(scores), "-o", str(report)], cwd=ROOT, env=env, check=True)
    scored = [json.loads(l) for l in scores.read_text().splitlines()]
    actors = sorted({a["actor"] for s in scored for a in s["actors"]})
    pairs = {(s["meta"]["source"], a["actor"]) for s in scored if "meta" in s for a in s["actors"]}

    browser.get(report.as_uri())
    # Every chart drew: the labels chart, one histogram per actor, the weekly chart; each with
    # its shapes and its axis text, and laid out at a real size.
    charts = browser.find_elements(By.TAG_NAME, "svg")
    assert len(charts) == 2 + len(actors)
    for svg in charts:
        assert svg.size["width"] > 200 and svg.size["height"] > 100, svg.size
        shapes = svg.find_elements(By.CSS_SELECTOR, "rect, polygon, polyline, circle, path")
        assert len(shapes) > 3
        assert svg.find_elements(By.TAG_NAME, "text")
    assert browser.execute_script(
        "return [...document.querySelectorAll('#time svg circle')].length;") >= 7, "weekly points"
    # The tables: one row per actor, one per (source, actor).
    rows = browser.find_elements(By.CSS_SELECTOR, 'table[data-table="actors"] tbody tr')
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == actors
    rows = browser.find_elements(By.CSS_SELECTOR, 'table[data-table="sources"] tbody tr')
    assert {tuple(td.text for td in r.find_elements(By.TAG_NAME, "td")[:2]) for r in rows} == pairs
    quotes = browser.find_elements(By.CSS_SELECTOR, "#evidence blockquote")
    assert quotes and all(q.get_attribute("data-actor") in actors for q in quotes)
    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1440, min(max(1000, height + 140), 6000))
    browser.save_screenshot(str(OUT / "report.png"))
    browser.set_window_size(1440, 1000)
    assert severe_logs(browser) == []
