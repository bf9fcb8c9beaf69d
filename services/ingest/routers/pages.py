"""The customer's pages: the chat at `/`, the embeddable widget script and its demo host page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, Response

from services.ingest.routers.deps import SettingsDep
from shared.http import html_page

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(tags=["pages"])

WIDGET_DEMO = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo shop - Care-by-Design widget</title>
<style>
  /* Deliberately loud host styles: the widget's Shadow DOM must not pick them up. */
  body { font: 18px/1.6 Georgia, serif; color: #1d3557; margin: 0 auto; max-width: 44rem;
         padding: 2rem 1rem; }
  button { background: hotpink; border-radius: 0; font-size: 30px; }
</style>
</head>
<body>
<main>
  <h1>Demo shop</h1>
  <p>An ordinary page. The chat in the corner comes from one script tag:</p>
  <pre>&lt;script src="/widget.js" data-key="..." async&gt;&lt;/script&gt;</pre>
  <p><a href="#top">A link on the host page</a> <button type="button">A host button</button></p>
</main>
<script src="/widget.js"{key_attr} async></script>
</body>
</html>
"""

HTML: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The page"}
}


CHAT_PAGE = (STATIC / "chat.html").read_text()


def _key_attr(key: str | None) -> str:
    """The widget's `data-key` attribute, escaped so a key never breaks out of it."""
    return f' data-key="{html.escape(key)}"' if key else ""


@router.get("/", response_class=HTMLResponse, responses=HTML, summary="The customer web chat")
async def chat_page(settings: SettingsDep) -> Response:
    """The full-page customer chat: the widget in page mode, with the demo key."""
    return html_page(CHAT_PAGE.replace("{key_attr}", _key_attr(settings.widget_demo_key)))


@router.get(
    "/widget.js",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}, "description": "The widget script"}},
    summary="The embeddable chat widget",
)
async def widget_script() -> Response:
    """The embeddable web chat widget (one <script> tag on any site)."""
    return FileResponse(
        STATIC / "widget.js",
        media_type="text/javascript",
        headers={
            # Unversioned URL: short cache so a fix reaches sites within minutes; the ETag
            # FileResponse sets makes the revalidation cheap.
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
            # Sites that isolate themselves (COEP) may still load it.
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


@router.get(
    "/widget-demo",
    response_class=HTMLResponse,
    responses=HTML,
    summary="A host page with the widget",
)
async def widget_demo(settings: SettingsDep) -> Response:
    """An ordinary host page with nothing but the widget's script tag added."""
    return html_page(WIDGET_DEMO.replace("{key_attr}", _key_attr(settings.widget_demo_key)))
