"""Every page of ours sends its own strict Content-Security-Policy and framing refusal.

The browser side (Chromium applying the policy to the real pages, with every script and
style still working) is in the end-to-end browser tests, which fail on any CSP refusal.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from services.audit.review_api import page_router
from services.escalation.api import console_router
from services.ingest.routers.pages import CHAT_PAGE, WIDGET_DEMO
from shared.http import content_security_policy, html_page

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "services/ingest/static/chat.html",
    ROOT / "services/escalation/static/console.html",
    ROOT / "services/audit/static/review.html",
]


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def directive(policy: str, name: str) -> list[str]:
    for part in policy.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"{name} missing from {policy!r}")


def test_inline_code_is_allowed_by_its_hash_and_nothing_else_inline() -> None:
    html = (
        "<html><head><style>p { color: red }</style><script src='/x.js'></script></head>"
        "<body><script>console.log('a < b')</script><script>go()</script></body></html>"
    )
    policy = content_security_policy(html)
    scripts = directive(policy, "script-src")
    assert scripts == ["'self'", sha256("console.log('a < b')"), sha256("go()")]
    assert directive(policy, "style-src") == ["'self'", sha256("p { color: red }")]
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    assert directive(policy, "frame-ancestors") == ["'none'"]
    assert directive(policy, "object-src") == ["'none'"]
    # A block that differs by one character is not covered: the hash is of the exact text.
    assert sha256("go() ") not in policy


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_pages_carry_no_code_a_hash_cannot_allow(path: Path) -> None:
    # Style attributes and inline event handlers would need 'unsafe-inline' (or
    # 'unsafe-hashes'); the pages use classes and addEventListener instead.
    text = path.read_text()
    assert not re.search(r"<[^>]+\sstyle\s*=", text), "style attribute"
    assert not re.search(r"<[a-zA-Z][^>]*\son[a-z]+\s*=", text), "inline event handler"
    assert "javascript:" not in text


def headers_of(app: FastAPI, url: str) -> dict[str, str]:
    with TestClient(app) as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    return dict(response.headers)


def test_console_and_review_pages_send_the_policy_for_their_own_code() -> None:
    for router, url, path in [
        (console_router(), "/console", PAGES[1]),
        (page_router(), "/review", PAGES[2]),
    ]:
        app = FastAPI()
        app.include_router(router)
        headers = headers_of(app, url)
        assert headers["content-security-policy"] == content_security_policy(path.read_text())
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert "text/html" in headers["content-type"]


def test_customer_pages_are_covered_whatever_key_is_filled_in() -> None:
    for template in (CHAT_PAGE, WIDGET_DEMO):
        page = template.replace("{key_attr}", ' data-key="pk_demo"')
        policy = html_page(page).headers["content-security-policy"]
        assert "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy
