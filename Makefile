# Altostratus: `make run` starts the portal and a worker; `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: build headers for libvirt-python and python-ldap, and the real parts the tests use.
DEB_PACKAGES := python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu \
	libvirt-clients libxml2-utils qemu-system-x86 qemu-utils qemu-block-extra tgt libiscsi-bin slapd ldap-utils \
	libldap2-dev libsasl2-dev gnupg openssl cpio busybox-static syslinux mtools dosfstools chromium iproute2 \
	nftables dnsmasq-base iptables

# PostgreSQL and Redis for the production-configuration pass of `make test`, when they answer.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/altostratus
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
TEST_CACHE_URL ?= redis://127.0.0.1:6379/14

.PHONY: help system-deps install run test test-embedded test-production lint format lock clean

help:
	@echo "make run    install what is missing, migrate, load demo data, start the portal and a worker"
	@echo "make test   install what is missing and run the whole test suite"
	@echo "make lint   ruff (lint + format check), mypy and the import layers (lint-imports)"
	@echo "make format apply ruff's formatting and safe fixes"
	@echo "make lock   re-pin requirements.txt and requirements/dev.txt from requirements/*.in"

# Node.js and npm (for the pinned htmx) come from Debian's nodejs and npm packages unless npm is already there:
# a machine with another Node.js distribution (NodeSource's carries npm) cannot take Debian's npm beside it.
system-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done; \
		command -v npm >/dev/null || echo nodejs npm); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# requirements.txt installs the shared entry-format package (client/metadata) and requirements/dev.txt the alto
# client (client/), both editable from this checkout; their own pyproject.toml files are prerequisites too.
$(STAMP): requirements.txt requirements/dev.txt client/pyproject.toml client/metadata/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt -r requirements/dev.txt
	touch $@

# Third-party front-end files (htmx) from the npm registry at the versions package-lock.json pins, copied into the
# git-ignored static/vendor/ that collectstatic and whitenoise serve: never committed, never a CDN.
VENDOR := static/vendor/htmx.min.js

$(VENDOR): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js $@

install: system-deps $(STAMP) $(VENDOR)

run: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input -v0
	$(BIN)/python manage.py seed_demo
	@echo "Starting the portal on http://127.0.0.1:8000/ and one worker. Ctrl-C stops both."
	@# No front-end worker applies nftables rules in the demo (its simulated VMs route no packets): FRONTEND_QUEUE empty.
	FRONTEND_QUEUE= $(BIN)/honcho start -f Procfile

test: install test-embedded test-production

test-embedded:
	@echo "== Test suite on the embedded defaults (SQLite, filesystem broker)"
	env -u DATABASE_URL -u CELERY_BROKER_URL -u CELERY_RESULT_BACKEND -u CACHE_URL $(BIN)/pytest

test-production:
	@if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
		echo "== Test suite on the production configuration (PostgreSQL, Redis)"; \
		DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) CELERY_RESULT_BACKEND=$(TEST_BROKER_URL) \
			CACHE_URL=$(TEST_CACHE_URL) \
			$(BIN)/pytest -m "not browser"; \
	else \
		echo "== PostgreSQL (5432) or Redis (6379) does not answer on 127.0.0.1: production-configuration pass skipped"; \
		if [ -n "$$CI" ]; then echo "CI must test the production configuration"; exit 1; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: | $(BIN)/python
	$(BIN)/pip install -q pip-tools
	cd requirements && ../$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links base.in -o ../requirements.txt
	cd requirements && ../$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links dev.in -o dev.txt
	printf '\n# This repository'"'"'s own packages: the entry-format rules the server and the alto client share.\n-e ./client/metadata\n' >> requirements.txt
	printf '\n# This repository'"'"'s own packages: the alto client, for its tests.\n-e ./client\n' >> requirements/dev.txt

clean:
	rm -rf var/test var/broker var/celery-results var/static node_modules static/vendor
