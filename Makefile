# The front door. `make run` and `make test` set up what they need on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PYTHON := $(VENV)/bin/python
MICROPYTHON ?= $(abspath $(VENV)/bin/micropython)
export MICROPYTHON
BOOTSTRAP_PYTHON ?= python3
PYTEST_ARGS ?=

SETUP_STAMPS := $(VENV)/.requirements build/deps/.fetched build/stubs/.installed build/.mosquitto build/.chromium build/wasm/.installed

.PHONY: help setup run test lint format typecheck build clean

# every target is listed here (tests/host/test_make.py checks it)
help:
	@echo "make run        the local AWS IoT stand-in and a simulated ESP32 running demo jobs (KEEP=1: stay up)"
	@echo "make test       the whole test suite (lint, ESP32 API check, host and MicroPython tests)"
	@echo "make setup      virtualenv, pinned tools, mosquitto, MicroPython dependencies (a line per step)"
	@echo "make build      compile every device module to .mpy under build/mpy"
	@echo "make lint       ruff on host tools and tests"
	@echo "make format     ruff format and fix host tools and tests"
	@echo "make typecheck  check device code against the ESP32 port's API (pyright + stubs)"
	@echo "make bench      benchmarks, about 4 minutes (BENCH_ARGS=...)"
	@echo "make status     things, connections, last telemetry, jobs and executions, live (STATUS_ARGS=--aws for AWS)"
	@echo "make clean      remove build outputs and deploy's staging folder (keeps the virtualenv and state/)"
	@echo ""
	@echo "The local AWS IoT stand-in (docs/standin.md):"
	@echo "make standin    the stand-in alone, until Ctrl-C (STANDIN_ARGS=--state DIR; default build/standin)"
	@echo "make loadtest   many simulated devices against the stand-in (LOADTEST_ARGS=\"--devices 500 --jobs 5\")"
	@echo ""
	@echo "A device (docs/tooling.md):"
	@echo "make flash      PORT=/dev/ttyUSB0 CHIP=esp32|esp32s3|esp32c3 FIRMWARE=file.bin: MicroPython onto a chip"
	@echo "make provision  THING=name ENDPOINT=... CERT=... KEY=... CA=... [BOARD=esp32] [WIFI_SSID=... WIFI_PASSWORD=...]"
	@echo "                or THING=name STANDIN=build/standin: endpoint, port, CA (and certificate) from a stand-in"
	@echo "make deploy     PORT=/dev/ttyUSB0 THING=name [HANDLERS=path/to/handlers.py]: files onto the board"
	@echo "make vboard     a virtual board on a pty, to deploy to without hardware (VBOARD_ROOT=state/vboard)"

setup: $(SETUP_STAMPS)

$(VENV)/.requirements: requirements.txt
	@echo "setup: virtualenv $(VENV)"
	@test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV) || { \
	  echo "cannot create a virtualenv: install python3-venv (e.g. apt-get install python3-venv)"; exit 1; }
	@echo "setup: pip, then the pinned tools of requirements.txt (a few minutes the first time)"
	@$(PYTHON) -m pip install --quiet --upgrade pip
	@$(PYTHON) -m pip install --quiet -r requirements.txt
	@touch $@

build/deps/.fetched: tools/fetch_deps.py $(VENV)/.requirements
	@echo "setup: umqtt.simple from the package registry into build/deps (checksum verified)"
	@$(PYTHON) -m tools.fetch_deps build/deps
	@touch $@

build/stubs/.installed: requirements-stubs.txt $(VENV)/.requirements
	@echo "setup: the ESP32 API stubs into build/stubs (for make typecheck)"
	@rm -rf build/stubs
	@$(PYTHON) -m pip install --quiet --no-compile --target build/stubs -r requirements-stubs.txt
	@touch $@

build/.mosquitto:
	@echo "setup: mosquitto (the stand-in's MQTT broker)"
	@mkdir -p build
	@if ! command -v mosquitto >/dev/null && ! test -x /usr/sbin/mosquitto; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto) >/dev/null \
	      || { echo "installing mosquitto failed"; exit 1; }; \
	  else \
	    echo "mosquitto is needed: run  sudo apt-get install -y mosquitto  and then make again"; exit 1; \
	  fi; \
	fi
	@touch $@

# Debian's chromium, for the fleet page's browser test (driven by playwright; no browser download)
build/.chromium:
	@echo "setup: Debian's chromium (the fleet page's browser test)"
	@mkdir -p build
	@if test -x /usr/bin/chromium; then touch $@; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium (the fleet page's browser test)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	    && touch $@ || { echo "installing chromium failed"; exit 1; }; \
	else \
	  echo "the fleet page's browser test needs chromium: run  sudo apt-get install -y chromium  (skipped until then)"; \
	fi

# The 32-bit MicroPython (WebAssembly, run by Node.js) the device tests also run on:
# the exact version and checksum in tools/wasm/package-lock.json, installed with `npm ci`.
build/wasm/.installed: tools/wasm/package.json tools/wasm/package-lock.json
	@echo "setup: the 32-bit MicroPython (WebAssembly, npm, pinned) into build/wasm"
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >/dev/null \
	      || { echo "installing nodejs and npm failed"; exit 1; }; \
	  else \
	    echo "Node.js 18+ and npm are needed: run  sudo apt-get install -y nodejs npm  and then make again"; exit 1; \
	  fi; \
	fi
	@node -e 'process.exit(+process.versions.node.split(".")[0] < 18 ? 1 : 0)' \
	  || { echo "Node.js 18 or later is needed (found $$(node --version))"; exit 1; }
	rm -rf build/wasm && mkdir -p build/wasm
	cp tools/wasm/package.json tools/wasm/package-lock.json build/wasm/
	cd build/wasm && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

test: setup lint typecheck
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.requirements
	$(VENV)/bin/ruff check tools tests
	$(VENV)/bin/ruff format --check tools tests

format: $(VENV)/.requirements
	$(VENV)/bin/ruff format tools tests
	$(VENV)/bin/ruff check --fix tools tests

typecheck: $(VENV)/.requirements build/stubs/.installed
	$(VENV)/bin/pyright

build: $(VENV)/.requirements build/deps/.fetched
	$(PYTHON) -m tools.build

run: setup
	$(PYTHON) -m tools.run $(if $(KEEP),--keep) $(RUN_ARGS)

clean:
	rm -rf build/mpy build/firmware build/deploy

# --- local AWS IoT stand-in (docs/standin.md) ---
.PHONY: standin loadtest
standin: setup
	$(PYTHON) -m tools.standin up $(STANDIN_ARGS)

loadtest: setup
	$(PYTHON) -m tools.standin.loadtest $(LOADTEST_ARGS)

# the fleet's status: the stand-in of build/standin by default; STATUS_ARGS="--aws" for AWS IoT
.PHONY: status
status: $(VENV)/.requirements
	$(PYTHON) -m tools.status $(or $(STATUS_ARGS),--standin build/standin)

# ---- Device tooling (docs/tooling.md): provision, deploy, flash, and a virtual board ----
.PHONY: provision deploy flash vboard
BOARD ?= esp32
CONFIG ?= $(if $(THING),state/provision/$(THING))
need = @test -n "$($(1))" || { echo "make $@: $(1)=$(2) is needed (docs/tooling.md)"; exit 2; }
# the Wi-Fi password reaches tools.provision through the environment: on no command line, never echoed
export WIFI_PASSWORD

provision: $(VENV)/.requirements
	$(call need,THING,<thing name>)
	$(PYTHON) -m tools.provision --thing "$(THING)" $(if $(ENDPOINT),--endpoint "$(ENDPOINT)") \
	  $(if $(CERT),--cert "$(CERT)") $(if $(KEY),--key "$(KEY)") $(if $(CA),--ca "$(CA)") --board "$(BOARD)" \
	  $(if $(STANDIN),--standin "$(STANDIN)") $(if $(WIFI_SSID),--wifi-ssid "$(WIFI_SSID)") \
	  $(if $(CREATE_IN_AWS),--create-in-aws) $(if $(CODESIGN_CERT),--codesign-cert "$(CODESIGN_CERT)") $(PROVISION_ARGS)

deploy: $(VENV)/.requirements
	$(call need,PORT,<serial port>)
	$(call need,CONFIG,<folder from make provision> (or THING=<thing name>))
	$(PYTHON) -m tools.deploy --port "$(PORT)" --config "$(CONFIG)" $(if $(HANDLERS),--handlers "$(HANDLERS)") $(if $(ROMFS),--romfs) $(DEPLOY_ARGS)

flash: $(VENV)/.requirements
	$(call need,PORT,<serial port>)
	$(call need,CHIP,esp32|esp32s3|esp32c3)
	$(call need,FIRMWARE,<MicroPython .bin>)
	$(PYTHON) -m tools.flash --port "$(PORT)" --chip "$(CHIP)" --firmware "$(FIRMWARE)" $(FLASH_ARGS)

# ROMFS=1: the virtual board has a 128 KiB ROMFS partition, for `make deploy ROMFS=1`
vboard: $(VENV)/.requirements build/deps/.fetched
	$(PYTHON) -m tools.vboard --root "$(or $(VBOARD_ROOT),state/vboard)" --frozen umqtt.simple \
	  $(if $(ROMFS),--romfs 131072)

# --- benchmarks (docs/benchmarks.md): floor, our device, the SDK v2 peer, heap, chip, scanner, size, scale ---
.PHONY: bench
bench: setup
	$(PYTHON) -m bench.run $(BENCH_ARGS)
