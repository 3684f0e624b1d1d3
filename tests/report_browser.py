"""Render an HTML file in headless Chromium and report what went wrong (test helper, not a test).

Uses Selenium with the system ``chromedriver`` (Debian packages ``chromium`` and
``chromium-driver``). Network is locked down on the browser side so a stray request fails at once
instead of hanging: every host name resolves to nothing (``--host-resolver-rules``) and a page-load
timeout applies. Requests are collected from the DevTools performance log
(``Network.requestWillBeSent``), from ``performance.getEntriesByType('resource')`` and from the
resource URLs the DOM references (so a request that a Content-Security-Policy refused still shows
up as attempted).

``browser_unavailable()`` gives the reason to skip when the browser stack is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = (
    "chromium",
    "chromium-browser",
    "chromium-headless-shell",
    "google-chrome",
    "google-chrome-stable",
)
CHROMEDRIVER_CANDIDATES = ("chromedriver",)
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")
BROWSER_INTERNAL = ("chrome:", "chrome-untrusted:", "devtools:", "chrome-extension:")
INSTALL_HINT = "apt-get install -y chromium chromium-driver && pip install selenium"

# Resource URLs referenced anywhere in the page: images, scripts, styles, frames, media, CSS url().
_DOM_URLS_JS = r"""
const urls = [];
const add = (u) => { if (u) urls.push(String(u)); };
document.querySelectorAll('img').forEach(e => { add(e.currentSrc || e.src);
  if (e.srcset) e.srcset.split(',').forEach(s => add(new URL(s.trim().split(/\s+/)[0], document.baseURI).href)); });
document.querySelectorAll('script[src],iframe[src],embed[src],video[src],audio[src],source[src],track[src],input[src]')
  .forEach(e => add(e.src));
document.querySelectorAll('link[href]').forEach(e => add(e.href));
document.querySelectorAll('object[data]').forEach(e => add(e.data));
document.querySelectorAll('video[poster]').forEach(e => add(e.poster));
document.querySelectorAll('[style*="url("]').forEach(e => {
  for (const m of e.getAttribute('style').matchAll(/url\(\s*['"]?([^'")]+)/g)) add(new URL(m[1], document.baseURI).href); });
for (const sheet of document.styleSheets) { let rules = []; try { rules = sheet.cssRules; } catch (err) { continue; }
  for (const r of rules) { const t = r.cssText || '';
    for (const m of t.matchAll(/url\(\s*['"]?([^'")]+)/g)) add(new URL(m[1], document.baseURI).href);
    if (r.href) add(new URL(r.href, document.baseURI).href); } }
performance.getEntriesByType('resource').forEach(e => add(e.name));
return urls;
"""

_IMAGES_JS = r"""
return Array.from(document.images).map(i => ({
  src: (i.currentSrc || i.src || '').slice(0, 120), complete: i.complete,
  naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
  displayedWidth: i.getBoundingClientRect().width}));
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($CHROMIUM_BINARY first), or None."""
    env = os.environ.get("CHROMIUM_BINARY")
    if env and Path(env).exists():
        return env
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_chromedriver() -> str | None:
    """Path of chromedriver ($CHROMEDRIVER first), or None."""
    env = os.environ.get("CHROMEDRIVER")
    if env and Path(env).exists():
        return env
    for name in CHROMEDRIVER_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver"):
        if Path(path).exists():
            return path
    return None


def browser_unavailable() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed ({INSTALL_HINT})"
    if find_chromium() is None:
        return f"headless Chromium not found on PATH ({INSTALL_HINT})"
    if find_chromedriver() is None:
        return f"chromedriver not found on PATH ({INSTALL_HINT})"
    return None


def _is_local(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES) or url == ""


def _network_urls(perf_entries: list[dict[str, Any]]) -> list[str]:
    """URLs of the requests the page made (the browser's own chrome:// pages left out)."""
    urls: list[str] = []
    for entry in perf_entries:
        try:
            msg = json.loads(entry["message"])["message"]
        except (KeyError, ValueError, TypeError):
            continue
        params = msg.get("params", {})
        if str(params.get("documentURL", "")).startswith(BROWSER_INTERNAL):
            continue  # e.g. the new-tab page Chromium opens before the navigation
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(params.get("request", {}).get("url", ""))
        elif msg.get("method") == "Network.webSocketCreated":
            urls.append(params.get("url", ""))
    return urls


def _full_page_screenshot(driver, path: Path, max_height: int) -> dict[str, int]:
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    width = int(size["width"])
    height = int(min(size["height"], max_height))
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "fromSurface": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    import base64

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return {"width": width, "height": height}


def render_in_browser(
    html_path: str | os.PathLike,
    screenshot_path: str | os.PathLike,
    *,
    width: int = 1280,
    height: int = 900,
    timeout_s: float = 30.0,
    max_screenshot_height: int = 20000,
) -> dict[str, Any]:
    """Open ``html_path`` in headless Chromium, save a full-page PNG to ``screenshot_path``.

    Returns ``console_errors`` (browser-log entries at SEVERE: JS errors, failed loads, CSP
    refusals), ``images_total``, ``images_loaded`` (``<img>`` complete with naturalWidth > 0),
    ``external_requests`` (every requested or referenced URL not starting with file:, data:,
    about: or blob:), plus ``images`` (per-image detail), ``requests`` (all network requests),
    ``title``, ``page_size`` (the screenshot's CSS size), ``viewport`` (client and scroll sizes of
    the document; headless Chromium's window is at least 500 px wide) and ``screenshot``.
    """
    reason = browser_unavailable()
    if reason:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service

    html_path = Path(html_path).resolve()
    screenshot_path = Path(screenshot_path)
    profile = tempfile.mkdtemp(prefix="cropn2o-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = find_chromium()
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-dev-shm-usage",
        "--no-default-browser-check",
        "--metrics-recording-only",
        "--mute-audio",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    opts.page_load_strategy = "normal"
    service = Service(executable_path=find_chromedriver(), log_output=os.devnull)

    driver = None
    timed_out = False
    try:
        driver = webdriver.Chrome(options=opts, service=service)
        driver.set_page_load_timeout(timeout_s)
        driver.set_script_timeout(timeout_s)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.get_log("performance")  # drop what the start-up tab logged
        driver.get_log("browser")
        try:
            driver.get(html_path.as_uri())
        except TimeoutException:
            timed_out = True
            driver.execute_script("window.stop();")
        images = driver.execute_script(_IMAGES_JS)
        viewport = driver.execute_script(
            "const d = document.documentElement; return {width: d.clientWidth, "
            "height: d.clientHeight, scrollWidth: d.scrollWidth, scrollHeight: d.scrollHeight};"
        )
        dom_urls = driver.execute_script(_DOM_URLS_JS)
        title = driver.title
        page = _full_page_screenshot(driver, screenshot_path, max_screenshot_height)
        browser_log = driver.get_log("browser")
        perf_log = driver.get_log("performance")
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

    requests = _network_urls(perf_log)
    external = sorted({u for u in requests + list(dom_urls) if not _is_local(u)})
    console_errors = [e.get("message", "") for e in browser_log if e.get("level") == "SEVERE"]
    if timed_out:
        console_errors.append(f"page load timed out after {timeout_s:g} s")
    loaded = sum(1 for im in images if im["complete"] and im["naturalWidth"] > 0)
    return {
        "console_errors": console_errors,
        "images_total": len(images),
        "images_loaded": loaded,
        "external_requests": external,
        "images": images,
        "requests": requests,
        "title": title,
        "page_size": page,
        "viewport": viewport,
        "screenshot": screenshot_path,
    }
