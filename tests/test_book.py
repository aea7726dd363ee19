"""The report book: built from a run's artifacts, then checked in headless Chromium as a reader would."""

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from gimbal.divergence.book import build_book

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "_build" / "screenshots"


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """A small real run (groups 1, 3, 8a in the quick profile) and its book."""
    root = tmp_path_factory.mktemp("bookdiag")
    cmd = [sys.executable, "-m", "gimbal.cli", "diag", "run", "--groups", "1,3,8a", "--run-id", "book-ok", "--root", str(root), "--jobs", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    landing = build_book(root, "book-ok", REPO)
    return root, landing


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    exe = _chromium()
    if exe is None or not shutil.which("chromedriver"):
        pytest.skip("headless Chromium / chromedriver not installed (Debian packages chromium, chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1300,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def _check_page(driver, url: Path, shot: str):
    driver.get(url.as_uri())
    driver.execute_script("return document.readyState")
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth])")
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / shot))
    broken_images = [src for src, width in images if not width]
    broken_links = []
    for href in links:
        parsed = urlparse(href)
        if parsed.scheme != "file":
            continue  # external links are not ours to check offline
        target = Path(unquote(parsed.path))
        if not target.exists():
            broken_links.append(href)
    return images, broken_images, broken_links, driver.page_source


@pytest.mark.browser
@pytest.mark.slow
def test_summary_and_group_pages_load_every_image_and_link(built_book, browser):
    root, landing = built_book
    assert landing.exists()
    images, bad_img, bad_links, html = _check_page(browser, landing, "summary.png")
    assert not bad_img and not bad_links, (bad_img, bad_links)
    assert "Which group fails first" in html and "temporal_scaling" in html
    group = landing.parent / "groups" / "group_3_sampling_baseline_minimal.html"
    images, bad_img, bad_links, html = _check_page(browser, group, "group_3.png")
    assert len([s for s, w in images if w and "_images" in (s or "")]) >= 5  # the five sampling plots, embedded
    assert not bad_img and not bad_links, (bad_img, bad_links)
    for section in ("1. Header", "4. Sampling summary", "7. Next action"):
        assert section in html
    assert "Traceback" not in html  # no raw tracebacks on a page of a group that did not fail
    for page in ("runs", "data", "environment"):
        _, bad_img, bad_links, _ = _check_page(browser, landing.parent / f"{page}.html", f"{page}.png")
        assert not bad_img and not bad_links, (page, bad_img, bad_links)


@pytest.mark.slow
def test_a_failed_group_is_named_on_the_summary(built_book, tmp_path):
    import papermill as pm

    root, _ = built_book
    from gimbal.divergence.runner import NOTEBOOK_DIR

    params = dict(group="3", run_id="book-failed", max_T=10, root=str(root), fail_at="sampling")
    with pytest.raises(pm.PapermillExecutionError):
        pm.execute_notebook(str(NOTEBOOK_DIR / "group_3_sampling_baseline_minimal.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=params, progress_bar=False, kernel_name="python3", cwd=str(REPO))
    landing = build_book(root, "book-failed", REPO)
    html = landing.read_text(encoding="utf-8")
    assert "Group 3" in html and "crashed" in html and "injected failure" in html
    group_page = (landing.parent / "groups" / "group_3_sampling_baseline_minimal.html").read_text(encoding="utf-8")
    assert "failed" in group_page and "sampling" in group_page
    # the run history shows both runs side by side
    runs = (landing.parent / "runs.html").read_text(encoding="utf-8")
    assert "book-ok" in runs and "book-failed" in runs
