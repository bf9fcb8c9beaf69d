"""Chromium applies each page's own Content-Security-Policy, and every page still works.

Only the pages are served (no platform): the question is whether a real browser, enforcing the
policy the apps send, still runs every script and applies every style sheet of each page,
including the widget's, which it builds at run time, in the host page and in a Shadow DOM.
"""

from __future__ import annotations

from fastapi import FastAPI
from playwright.async_api import Browser

from services.audit.review_api import page_router
from services.escalation.api import console_router
from services.ingest.routers.pages import router as ingest_pages
from services.ingest.settings import IngestSettings
from shared.http import provide
from tests.e2e.browser import record_errors
from tests.kit import serving

# What each page must look like once its scripts ran and its styles applied: a JavaScript
# expression per page that is true only then (computed values come from the page's CSS).
CHECKS = {
    "/": """() => getComputedStyle(document.querySelector('cbd-chat-widget .launcher')).display
             === 'none' && !!document.querySelector('#cbd-input')""",
    "/widget-demo": """() => {
        const root = document.querySelector('cbd-chat-widget').shadowRoot;
        return getComputedStyle(root.querySelector('.launcher')).width === '60px'; }""",
    "/console": """() => getComputedStyle(document.querySelector('#login-submit')).minHeight
             === '44px'""",
    "/review": """() => getComputedStyle(document.querySelector('#login')).maxWidth === '384px'
             && getComputedStyle(document.body).margin === '0px'""",
}


def pages_app() -> FastAPI:
    app = FastAPI()
    app.include_router(ingest_pages)
    app.include_router(console_router())
    app.include_router(page_router())
    provide(app, IngestSettings())
    return app


async def test_every_page_runs_and_is_styled_under_its_own_policy(browser: Browser) -> None:
    async with serving(pages_app()) as (base,):
        for path, check in CHECKS.items():
            context = await browser.new_context()
            try:
                page = await context.new_page()
                errors: list[str] = []
                record_errors(page, errors, path)
                response = await page.goto(base + path)
                assert response is not None
                policy = response.headers["content-security-policy"]
                assert "'unsafe-inline'" not in policy, policy
                await page.wait_for_function(check, timeout=10_000)
                assert not errors, errors
            finally:
                await context.close()


async def test_the_policy_refuses_injected_inline_script(browser: Browser) -> None:
    # The check above could pass with a policy the browser ignores; this one shows Chromium
    # enforces it: markup injected into the chat page cannot run.
    async with serving(pages_app()) as (base,):
        context = await browser.new_context()
        try:
            page = await context.new_page()
            errors: list[str] = []
            record_errors(page, errors)
            await page.goto(base + "/")
            await page.evaluate(
                """() => { const s = document.createElement('script');
                           s.textContent = 'window.injected = true';
                           document.body.appendChild(s); }"""
            )
            assert await page.evaluate("() => window.injected === undefined")
            assert any("Content Security Policy" in e for e in errors), errors
        finally:
            await context.close()
