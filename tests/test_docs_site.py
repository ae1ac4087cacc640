"""The built documentation, opened as a reader opens it: headless Chromium on the built site.

``make test`` builds the site first (``make docs``: gallery executed, warnings as errors) and
installs Debian's ``chromium`` and ``chromium-driver`` when they are missing (``make browser``).
The site is served from ``docs/_build/html`` on a loopback port; the browser has no other network.
Each test saves a screenshot under ``docs/_build/screenshots`` for review.
"""

import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow          # trains, runs subprocesses or reads the built site: `make test-fast` skips it

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
SHOTS = ROOT / "docs" / "_build" / "screenshots"
CHROMIUM = os.environ.get("UFM_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("UFM_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site in {SITE}: run `make docs` (make test builds it before the suite)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not Path(path).exists():
            pytest.fail(f"{what} not found at {path}: `make browser` installs the Debian packages "
                        "chromium and chromium-driver (make test runs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ufm-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url):
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (document.readyState === 'complete') { done(); } else { window.addEventListener('load', () => done()); }")


def _typeset(driver):
    """Wait for MathJax to finish typesetting; returns False when MathJax did not load."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const t0 = Date.now();"
        "(function wait() {"
        "  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {"
        "    MathJax.startup.promise.then(() => done(true), () => done(false));"
        "  } else if (Date.now() - t0 > 30000) { done(false); } else { setTimeout(wait, 100); }"
        "})();")


def _local_only(driver, origin):
    """Every resource the page loaded came from the served site (no CDN)."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith(origin)]


def _shot(driver, name):
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 20_000, f"screenshot {path} is (nearly) blank"
    return path


def test_index_page(site, browser):
    _open(browser, f"{site}/index.html")
    assert "ufm" in browser.title
    links = browser.execute_script("return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    for target in ("theory.html", "auto_examples/index.html", "api/index.html", "guide/index.html"):
        assert target in links, f"index does not link {target}"
    assert _local_only(browser, site) == []
    _shot(browser, "index")


def test_theory_page_renders_its_equations(site, browser):
    _open(browser, f"{site}/theory.html")
    assert _typeset(browser), "MathJax did not load or failed to typeset the theory page"
    stats = browser.execute_script(
        "return {math: document.querySelectorAll('mjx-container').length,"
        "        display: document.querySelectorAll('mjx-container[display=\"true\"]').length,"
        "        errors: document.querySelectorAll('mjx-merror, .MathJax_Error').length,"
        "        text: document.querySelector('main').innerText}")
    assert stats["display"] >= 40 and stats["errors"] == 0, {k: v for k, v in stats.items() if k != "text"}
    for raw in ("$$", "\\begin{", "\\tag{", "\\frac"):
        assert raw not in stats["text"], f"raw TeX {raw!r} shows on the theory page"
    # stable anchors: the sections the code cites, and the equation numbers
    for anchor in ("theory-0-1", "theory-1-2", "theory-4", "theory-8-2", "theory-8-6", "theory-tv6", "theory-eq-0-1"):
        assert browser.execute_script(f"return document.getElementById('{anchor}') !== null"), anchor
    tags = browser.execute_script(
        "return Array.from(document.querySelectorAll('mjx-container[display=\"true\"]')).map(e => e.innerText)")
    assert any("(0.1)" in t for t in tags) and any("(8.2)" in t for t in tags), "equation tags not rendered"
    assert _local_only(browser, site) == []
    browser.execute_script("document.getElementById('theory-1-2').scrollIntoView()")
    _shot(browser, "theory")


def test_gallery_page_shows_its_figures(site, browser):
    _open(browser, f"{site}/auto_examples/plot_structure_before_collapse.html")
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('img.sphx-glr-single-img, img.sphx-glr-multi-img'))"
        ".map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))")
    assert len(images) >= 2, images
    assert all(i["complete"] and i["width"] > 100 for i in images), images
    text = browser.execute_script("return document.querySelector('main').innerText")
    assert "semantic gap" in text and "Traceback" not in text
    assert _local_only(browser, site) == []
    browser.execute_script("document.querySelector('img.sphx-glr-single-img, img.sphx-glr-multi-img').scrollIntoView()")
    _shot(browser, "gallery")


def test_api_page_documents_and_links_to_the_theory(site, browser):
    _open(browser, f"{site}/api/generated/ufm.metrics.semantic_gap.html")
    assert browser.execute_script("return document.getElementById('ufm.metrics.semantic_gap') !== null")
    text = browser.execute_script("return document.querySelector('main').innerText")
    assert "Parameters" in text and "attributes" in text and "Returns" in text
    theory_links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"
        ".filter(h => h && h.includes('theory.html#theory-'))")
    assert theory_links, "the docstring's THEORY citation is not a link"
    assert _local_only(browser, site) == []
    _shot(browser, "api")
