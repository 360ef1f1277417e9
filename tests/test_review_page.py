"""The review page (/ui/review) in a real browser against the real server: Debian's
Chromium, driven by Playwright's Python package (which never downloads a browser here)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.server import wait_until
from tests.factories import tiny_server
from training.store import SQLiteFeedbackStore

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without these Chromium floods it with refused connections.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TEXTS = ["lost my card", "the exchange rate", "refund please", "my card is stolen",
         "how much is a euro", "i want my money back"]  # fmt: skip
FEEDBACK_TOKEN = "feedback-token-Rv81mQz3LsWe"


def unavailable(reason: str):
    """Skip locally, but fail in CI: .ci/run installs Chromium and must run these tests."""
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def predicted(server, headers=None) -> None:
    """TEXTS served, and remembered by the prediction log."""
    answers = httpx.post(f"{server.base}/predict", json={"texts": TEXTS[:4]}, headers=headers)
    answers = (
        answers.json()
        + httpx.post(f"{server.base}/predict", json={"texts": TEXTS[4:]}, headers=headers).json()
    )
    ids = [a["prediction_id"] for a in answers]
    store = SQLiteFeedbackStore(server.data_dir)
    try:
        wait_until(lambda: len(store.get_predictions(ids)) == len(ids), timeout=30)
    finally:
        store.close()


def stored(server) -> dict[str, tuple[str, str | None]]:
    """{prediction_id: (label, source)} of every stored correction."""
    store = SQLiteFeedbackStore(server.data_dir)
    try:
        return {s.prediction_id: (s.label, s.source) for s in store.samples()}
    finally:
        store.close()


class Page:
    """The review page in a tab, with the items /review handed it."""

    def __init__(self, browser, base: str, width: int = 1280, height: int = 900):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.handed: dict[str, dict] = {}  # text -> item
        self.page.on("response", self._note)
        self.page.goto(f"{base}/ui/review")

    def _note(self, response) -> None:
        if "/review?" in response.url and response.status == 200:
            for item in response.json()["items"]:
                self.handed[item["text"]] = item

    def shown(self) -> dict:
        """The item on screen, as /review handed it."""
        self.page.locator("#item").wait_for(state="visible")
        return self.handed[self.page.locator("#text").inner_text()]

    def start(self, name: str) -> None:
        self.page.locator("#name").fill(name)
        self.page.locator("#setup button[type=submit]").click()

    def labeled(self, count: int) -> None:
        self.page.locator("#labeled", has_text=str(count)).wait_for()

    def close(self) -> None:
        self.context.close()


def test_label_with_clicks_and_keys_and_see_it_stored(browser, tmp_path, tiny_model_dir):
    with tiny_server(tmp_path, tiny_model_dir) as server:
        predicted(server)
        page = Page(browser, server.base)
        try:
            page.start("ann")
            item = page.shown()
            second = item["top"][1]["label"]
            page.page.locator("#suggestions button").nth(1).click()
            page.labeled(1)
            assert stored(server)[item["prediction_id"]] == (second, "ann")

            item = page.shown()  # 3 picks the third suggestion
            page.page.keyboard.press("3")
            page.labeled(2)
            assert stored(server)[item["prediction_id"]] == (item["top"][2]["label"], "ann")

            skipped = page.shown()  # S skips: nothing stored
            page.page.keyboard.press("s")
            item = page.shown()
            assert item["prediction_id"] != skipped["prediction_id"]
            page.page.keyboard.press("Enter")  # confirms the top suggestion
            page.labeled(3)
            assert stored(server)[item["prediction_id"]] == (item["top"][0]["label"], "ann")
            assert skipped["prediction_id"] not in stored(server)

            item = page.shown()  # the search box reaches every label
            page.page.locator("#search").fill("refund")
            page.page.locator("#matches button", has_text="refund_request").wait_for()
            page.page.keyboard.press("Enter")
            page.labeled(4)
            assert stored(server)[item["prediction_id"]] == ("refund_request", "ann")
            assert page.page.locator("#adapter").inner_text() == "base"

            screenshots(page, tmp_path)
        finally:
            page.close()


def screenshots(page: Page, tmp_path: Path) -> None:
    """The page at 1280 px and at a phone's width: drawn, and nothing wider than the screen."""
    from PIL import Image

    for width in (1280, 390):
        page.page.set_viewport_size({"width": width, "height": 844})
        path = tmp_path / f"review-{width}.png"
        page.page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as image:
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 50, f"{path} looks blank"
        overflow = page.page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, f"the page is {overflow} px wide at {width} px"


def test_the_page_asks_for_a_token_and_says_when_one_is_refused(browser, tmp_path, tiny_model_dir):
    tokens = {
        "LIVETUNE_TOKENS_PREDICT": "predict-token-Kd02nXp7RtYu",
        "LIVETUNE_TOKENS_FEEDBACK": FEEDBACK_TOKEN,
        "LIVETUNE_TOKENS_ADMIN": "admin-token-Ws5Hq0Lm2ZcB",
    }
    with tiny_server(tmp_path, tiny_model_dir, **tokens) as server:
        predicted(server, {"authorization": f"Bearer {tokens['LIVETUNE_TOKENS_PREDICT']}"})
        page = Page(browser, server.base)
        message = page.page.locator("#message")
        try:
            page.start("bob")  # no token yet: the page asks for one
            page.page.locator("#token").wait_for(state="visible")
            assert "needs an access token" in message.inner_text()

            page.page.locator("#token").fill("not-a-token-we-issued")
            page.page.locator("#setup button[type=submit]").click()
            page.page.locator("#message", has_text="not accepted (401)").wait_for()

            page.page.locator("#token").fill(tokens["LIVETUNE_TOKENS_PREDICT"])
            page.page.locator("#setup button[type=submit]").click()
            page.page.locator("#message", has_text="(403)").wait_for()

            page.page.locator("#token").fill(FEEDBACK_TOKEN)
            page.page.locator("#setup button[type=submit]").click()
            item = page.shown()
            page.page.keyboard.press("Enter")
            page.labeled(1)
            assert stored(server)[item["prediction_id"]] == (item["top"][0]["label"], "bob")
            kept = page.page.evaluate("sessionStorage.getItem('livetune.token')")
            assert kept == FEEDBACK_TOKEN  # asked once: kept for this tab
        finally:
            page.close()
