"""Helpers the browser tests share."""

from __future__ import annotations

import time

from playwright.async_api import Page


async def type_and_send(page: Page, text: str) -> float:
    """Type `text` into the chat composer and press Enter; the monotonic time Enter went down."""
    box = page.locator("#input")
    await box.click()
    await box.press_sequentially(text)
    sent_at = time.monotonic()
    await box.press("Enter")
    return sent_at
