"""Helpers the browser tests share."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, ConsoleMessage, Page


async def type_and_send(page: Page, text: str) -> float:
    """Type `text` into the chat composer and press Enter; the monotonic time Enter went down."""
    box = page.locator("#cbd-input")
    await box.click()
    await box.press_sequentially(text)
    sent_at = time.monotonic()
    await box.press("Enter")
    return sent_at


def record_errors(page: Page, errors: list[str], name: str = "") -> None:
    """Append to `errors` every uncaught JavaScript error and Content-Security-Policy refusal.

    The pages send a strict policy (inline code allowed by hash only); a block the policy
    refuses would silently not run or not style, so a refusal fails the test like an error.
    """
    prefix = f"{name}: " if name else ""
    page.on("pageerror", lambda exc: errors.append(f"{prefix}{exc}"))

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            errors.append(prefix + msg.text)

    page.on("console", on_console)


@asynccontextmanager
async def fresh_page(
    browser: Browser,
    url: str,
    *,
    init_script: str | None = None,
    width: int = 1000,
    height: int = 800,
) -> AsyncIterator[Page]:
    """A page in a fresh browser context (own storage: a new visitor) at `url`.

    Fails the test if the page raised a JavaScript error or broke its Content-Security-Policy
    while it was in use.
    """
    context = await browser.new_context(viewport={"width": width, "height": height})
    if init_script is not None:
        await context.add_init_script(init_script)
    page = await context.new_page()
    errors: list[str] = []
    record_errors(page, errors)
    try:
        await page.goto(url)
        yield page
        assert not errors, f"JavaScript errors on {url}: {errors}"
    finally:
        await context.close()
