"""Generation service: caring replies streamed from an OpenAI-compatible LLM server."""
