# syntax=docker/dockerfile:1
# Care-by-Design `generation`: care-by-design prompts and streamed replies from vLLM.
# Built from the repository root (`make images`):
#   docker build -f deploy/docker/generation.Dockerfile -t care-by-design/generation:TAG .
# Every service's Dockerfile has this same shape (tests/deploy/test_images.py checks it): a
# builder stage with the toolchain, a slim runtime stage with only the venv and the code, an
# unprivileged numeric user, and nothing written at run time outside /tmp, so it runs with a
# read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the project and its dependencies in a self-contained venv ---------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The dependencies alone, in their own layer, so a code change does not reinstall them: the
# project is installed over empty packages, then removed again.
COPY pyproject.toml ./
RUN mkdir -p shared services cbd && touch shared/__init__.py services/__init__.py cbd/__init__.py \
 && pip install . \
 && pip uninstall -y care-by-design \
 && python -m compileall -q /opt/venv/lib

# The code itself runs from /app as it is in the repository, data files included (the emotion
# model's training data, generation's knowledge base, SQL migrations, policies, static pages),
# with its bytecode compiled now: the runtime root filesystem is read-only.
COPY cbd /app/cbd
COPY shared /app/shared
COPY services /app/services
RUN python -m compileall -q /app
# py3langid's language model unpacked into the image now (68 MB), so every start, a restart
# after a crash included, reads it instead of unpacking it (1-3 s; shared/language.py).
RUN cd /app && CBD_CACHE_DIR=/app/.cache python -c "from shared.language import LangId; LangId()"

# --- runtime: the venv and an unprivileged user, nothing else ---------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    CBD_CACHE_DIR=/app/.cache \
    CBD_GENERATION_HOST=0.0.0.0 \
    CBD_GENERATION_PORT=8000

RUN groupadd --system --gid 10001 cbd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cbd

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# The orchestrator probes /livez and /readyz over HTTP; this is for plain `docker run`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)"]

ENTRYPOINT ["python", "-m", "cbd.serve", "generation"]
