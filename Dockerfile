# syntax=docker/dockerfile:1
# One image for all six platform services; the first argument picks the service:
#   docker run care-by-design:latest ingest      (emotion, memory, escalation, generation, audit)
# The embedded stack (`make run`) is the no-Docker way to run everything locally.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: install the project and its dependencies into a self-contained venv ------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package needs (the rest is kept out by .dockerignore as well).
COPY pyproject.toml ./
COPY cbd ./cbd
COPY shared ./shared
COPY services ./services

# A regular (non-editable) install; pip compiles the bytecode here, so the runtime image can
# keep a read-only root filesystem and still start fast.
RUN pip install --upgrade pip \
 && pip install . \
 && python -m compileall -q /opt/venv/lib

# --- runtime: the venv and an unprivileged user, nothing else -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 cbd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cbd

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000

ENTRYPOINT ["python", "-m", "cbd.serve"]
CMD ["ingest"]
