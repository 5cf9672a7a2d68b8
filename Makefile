# The one entry point. `make run` and `make test` install whatever is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := run

export UV_PYTHON_DOWNLOADS := never
export JUPYTER_PLATFORM_DIRS := 1
export PYTHONDONTWRITEBYTECODE := 1

HOST ?= 127.0.0.1
PORT ?= 8000
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
APT_PACKAGES := bubblewrap chromium socat python3-seccomp python3-venv prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := .venv/.stamp

.PHONY: install run test test-all lint bench services system-packages assets oidc-provider templates clean

install: system-packages $(STAMP) assets oidc-provider templates

# Debian packages the sandbox, the browser test, the front-end and the alert rules' checks
# (prometheus brings promtool) need; skipped when present
# (Node.js only when no npm is on PATH: NodeSource's nodejs conflicts with Debian's npm).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

# uv is bootstrapped with pip when missing (its installer script cannot be fetched everywhere).
$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
	  python3 -m pip install --quiet uv 2>/dev/null || \
	  python3 -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen
	@touch $(STAMP)

assets: src/fragments/web/static/vendor/.stamp

src/fragments/web/static/vendor/.stamp: frontend/package.json frontend/package-lock.json frontend/copy-vendor.mjs \
  frontend/codemirror-entry.mjs
	cd frontend && npm ci --include=dev --no-audit --no-fund --loglevel=error
	node frontend/copy-vendor.mjs
	@touch $@

# The real OpenID Connect provider the SSO tests run (npm oidc-provider); skipped when up to date.
oidc-provider: tests/oidc/node_modules/.stamp

tests/oidc/node_modules/.stamp: tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

templates: $(STAMP)
	.venv/bin/fragments templates build code-interpreter-v1

run: install
	.venv/bin/fragments serve --host $(HOST) --port $(PORT)

# PostgreSQL and Redis are started when down and never stopped (CI machines run them; tests never stop them).
services:
	@command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || true
	@command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
	    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true

test: install services
	.venv/bin/pytest -m "not slow"

test-all: install services
	.venv/bin/pytest

lint: $(STAMP)
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/hadolint deploy/Dockerfile
	.venv/bin/yamllint --strict -c deploy/.yamllint.yaml deploy
	find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml -print0 | \
	  xargs -0 .venv/bin/kubernetes-validate --strict --quiet

bench: install
	.venv/bin/python -m bench

clean:
	rm -rf .venv frontend/node_modules tests/oidc/node_modules src/fragments/web/static/vendor
