"""A stand-in OpenAI-compatible server that streams a fixed reply at a fixed rate.

The capacity benchmark measures the platform's own overhead on bot turns, so the LLM must cost
the same every time and almost nothing: every chat completion streams `--tokens` words at
`--tokens-per-s`, as server-sent events shaped like vLLM's and llama.cpp's.

    python -m bench.fake_llm --port 8099 --tokens 32 --tokens-per-s 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = (
    "I understand how frustrating this must be, and I am here to help you sort it out "
    "right away. Let me check your order and tell you what happens next, step by step."
)
WORDS = REPLY.split(" ")


def create_app(tokens: int, tokens_per_s: float, model: str) -> Starlette:
    """The ASGI app: /v1/models and streamed /v1/chat/completions."""

    def chunk(text: str, finish: str | None = None) -> str:
        body = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    async def stream() -> AsyncIterator[str]:
        for i in range(tokens):
            await asyncio.sleep(1.0 / tokens_per_s)
            yield chunk(("" if i == 0 else " ") + WORDS[i % len(WORDS)])
        yield chunk("", "stop")
        yield "data: [DONE]\n\n"

    async def completions(request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):
            return StreamingResponse(stream(), media_type="text/event-stream")
        await asyncio.sleep(tokens / tokens_per_s)
        text = " ".join(WORDS[i % len(WORDS)] for i in range(tokens))
        return JSONResponse(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ]
    )


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--tokens-per-s", type=float, default=200.0)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.tokens, args.tokens_per_s, args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
