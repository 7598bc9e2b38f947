# wasmatic — build, test and run.
#
#   make up      build everything and start a node on :$WASMATIC_PORT (8080)
#   make test    build the components and run every test, lints included
#   make bench   the node beside `wasmtime serve`, on loopback: BENCHMARKS.md
#   make bench-quick   a few seconds a row of a, b, c: the ratios, nothing written
#   make python  the Python examples (componentize-py in target/python-venv) into target/python
#   make js      the JavaScript example (componentize-js in target/js-tools) into target/js
#   make postgres  Debian's PostgreSQL, which the state tests start throwaway servers of
#   make openapi check operator/openapi.json with openapi-spec-validator (in target/checks-venv)

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
WASM_OUT    := target/$(WASM_TARGET)/release
COMPONENTS  := wasmatic-operator echo gecko custom-operator misbehave hello-proxy json-job caesar typed balance-check eth-query watcher cipher auditor async-echo wat-check
WASM_TARGETS := $(WASM_TARGET) wasm32-wasip1

# The pinned toolchain (rust-toolchain.toml's channel).
RUST_VERSION := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)

# The wasm components are built with their build paths remapped, so that their
# bytes do not depend on where the checkout or CARGO_HOME lies: the committed
# host/assets/proxy.wasm must equal what any machine builds from operator/.
# Sources of crates.io (any registry or mirror) become /crates/NAME-VERSION/,
# the rest of CARGO_HOME /cargo/, the checkout /wasmatic/ (the last match
# wins). std's paths name the rustc commit, fixed by the pin. The flags reach
# the wasm builds only, through CARGO_ENCODED_RUSTFLAGS (which also overrides
# any RUSTFLAGS of the caller): the host's build stays as it is. Expanded when
# a recipe runs, after `fetch` has unpacked the sources the wildcard lists.
CARGO_HOME_DIR = $(abspath $(or $(CARGO_HOME),$(HOME)/.cargo))
REMAPS = $(CURDIR)/=/wasmatic/ $(CARGO_HOME_DIR)/=/cargo/ \
         $(patsubst %,%=/crates/,$(wildcard $(CARGO_HOME_DIR)/registry/src/*/))
UNIT_SEP := $(shell printf '\037')
empty :=
space := $(empty) $(empty)
WASM_BUILD = CARGO_ENCODED_RUSTFLAGS='$(subst $(space),$(UNIT_SEP),$(addprefix --remap-path-prefix=,$(strip $(REMAPS))))' \
             $(CARGO) build --locked --release

.PHONY: setup fetch tools browser postgres python js checks openapi components operator build up test lint fmt bench bench-quick clean

## Puts the toolchain of rust-toolchain.toml in place with the wasm targets,
## and curl (idempotent). Every rustup call names its toolchain: until the
## pinned one exists, a bare `rustc` here would ask rustup for it. When the
## installed stable is the pinned version, its directory is linked under the
## pinned name, as a download would have named it: `rustup toolchain link`
## refuses names that look like versions, and builds must not depend on the
## network (`rustup toolchain uninstall 1.95.0` removes only the link).
setup:
	@set -e; \
	if ! command -v rustup >/dev/null; then \
	  rustc --version | grep -q '^rustc $(RUST_VERSION) ' || \
	    { echo "error: wasmatic builds with rustc $(RUST_VERSION) (rust-toolchain.toml), found: $$(rustc --version)" >&2; exit 1; }; \
	elif ! rustup toolchain list | grep -q '^$(RUST_VERSION)-'; then \
	  if RUSTUP_TOOLCHAIN=stable rustc --version 2>/dev/null | grep -q '^rustc $(RUST_VERSION) '; then \
	    for t in $(WASM_TARGETS); do \
	      rustup target list --toolchain stable --installed | grep -qx $$t || rustup target add --toolchain stable $$t; \
	    done; \
	    host=$$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p'); \
	    ln -s "$$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)" "$$(rustup show home)/toolchains/$(RUST_VERSION)-$$host"; \
	    echo "setup: toolchain $(RUST_VERSION) is the installed stable; registered it under that name"; \
	  else \
	    rustup toolchain install; \
	  fi; \
	fi; \
	if command -v rustup >/dev/null; then \
	  for t in $(WASM_TARGETS); do \
	    rustup target list --toolchain $(RUST_VERSION) --installed | grep -qx $$t || rustup target add --toolchain $(RUST_VERSION) $$t; \
	  done; \
	fi
	@command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl; }  # the README test runs curl

## Downloads and unpacks every crate of Cargo.lock (a no-op once done).
fetch: setup
	$(CARGO) fetch --locked

## Installs the tools the tests run (anvil, a local chain) from the pinned
## tools/package-lock.json; a no-op once the binary is in place.
ANVIL := tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
tools: $(ANVIL)
$(ANVIL): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed to install anvil (the tests' local chain)" >&2; exit 1; }
	npm ci --prefix tools --ignore-scripts --no-audit --no-fund
	touch $@

## Installs what the console's browser tests (host/tests/console.rs) drive:
## Debian's chromium, if /usr/bin/chromium is missing, and playwright-core
## from the pinned tools/browser/package-lock.json (no install scripts:
## playwright never downloads a browser of its own here, it is pointed at
## the system one). A no-op once both are in place.
CHROMIUM   := /usr/bin/chromium
PLAYWRIGHT := tools/browser/node_modules/playwright-core/package.json
browser: $(CHROMIUM) $(PLAYWRIGHT)
$(CHROMIUM):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
$(PLAYWRIGHT): tools/browser/package.json tools/browser/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed to install playwright-core (the console's browser tests)" >&2; exit 1; }
	npm ci --prefix tools/browser --ignore-scripts --no-audit --no-fund
	touch $@

## Installs Debian's PostgreSQL (its initdb, pg_ctl and createdb) when no
## /usr/lib/postgresql/*/bin/initdb exists: the state tests run throwaway
## servers of it on loopback (host/tests/support/postgres.rs). A no-op once
## one is there.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

## Installs componentize-py from the pinned, hashed tools/python/requirements.txt
## into a virtual environment under target/ (python3 and its venv module
## from Debian if missing), then builds the Python examples into
## target/python/. Each step is a no-op once its output is newer than its
## inputs.
PYTHON_VENV     := target/python-venv
COMPONENTIZE_PY := $(PYTHON_VENV)/bin/componentize-py
PYTHON_OUT      := target/python
python: $(PYTHON_OUT)/handler.wasm $(PYTHON_OUT)/cipher.wasm
$(COMPONENTIZE_PY): tools/python/requirements.txt
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { apt-get update -q && apt-get install -y -q python3 python3-venv; }
	rm -rf $(PYTHON_VENV)
	python3 -m venv $(PYTHON_VENV)
	$(PYTHON_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $<
	touch $@
# componentize-py runs the app's top-level code at build time and snapshots
# it; the WIT decides the bindings, so either changing rebuilds.
$(PYTHON_OUT)/handler.wasm: $(COMPONENTIZE_PY) $(wildcard examples/python/handler/*.py) $(wildcard wit/handler/*.wit wit/deps/*.wit)
	@mkdir -p $(@D)
	PYTHONDONTWRITEBYTECODE=1 $(COMPONENTIZE_PY) -d wit/handler -w wasmatic:handler/handler componentize -p examples/python/handler app -o $@
$(PYTHON_OUT)/cipher.wasm: $(COMPONENTIZE_PY) $(wildcard examples/python/cipher/*.py) $(wildcard examples/cipher/wit/*.wit wit/deps/*.wit)
	@mkdir -p $(@D)
	PYTHONDONTWRITEBYTECODE=1 $(COMPONENTIZE_PY) -d examples/cipher/wit -w acme:cipher/cipher componentize -p examples/python/cipher app -o $@

## Installs componentize-js from the pinned tools/js/package-lock.json into
## target/js-tools (no install scripts: its wizer is a platform package, and
## nothing is fetched outside the npm registry), then builds the JavaScript
## example into target/js/. Part of `make test`, which needs npm anyway.
## `npm install` with the lockfile, checked unchanged after, rather than
## `npm ci`: some of the tree's optional platform packages (jco-node-fs and
## rolldown for Windows and musl arm64) were never published at the locked
## versions, which `npm ci` counts as a lockfile out of sync.
JS_TOOLS        := target/js-tools
COMPONENTIZE_JS := $(JS_TOOLS)/node_modules/@bytecodealliance/componentize-js/src/cli.js
JS_OUT          := target/js
js: $(JS_OUT)/handler.wasm
$(COMPONENTIZE_JS): tools/js/package.json tools/js/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed to install componentize-js (examples/js)" >&2; exit 1; }
	@mkdir -p $(JS_TOOLS)
	cp tools/js/package.json tools/js/package-lock.json $(JS_TOOLS)/
	npm install --prefix $(JS_TOOLS) --ignore-scripts --no-audit --no-fund
	cmp -s tools/js/package-lock.json $(JS_TOOLS)/package-lock.json || { echo "error: npm changed tools/js/package-lock.json: regenerate it with npm install in tools/js" >&2; exit 1; }
	touch $@
$(JS_OUT)/handler.wasm: $(COMPONENTIZE_JS) $(wildcard examples/js/handler/*.js) $(wildcard wit/handler/*.wit wit/deps/*.wit)
	@mkdir -p $(@D)
	node $(COMPONENTIZE_JS) --wit wit/handler --world-name wasmatic:handler/handler -o $@ examples/js/handler/handler.js

## Installs the checkers of what the node serves (openapi-spec-validator,
## prometheus-client's OpenMetrics parser) from the pinned, hashed
## tools/checks/requirements.txt into a virtual environment under target/
## (python3 and its venv module from Debian if missing); a no-op once done.
## `make openapi` then validates the API document the operator serves at
## /openapi.json. Both are part of `make test`.
CHECKS_VENV       := target/checks-venv
OPENAPI_VALIDATOR := $(CHECKS_VENV)/bin/openapi-spec-validator
checks: $(OPENAPI_VALIDATOR)
openapi: checks
	$(OPENAPI_VALIDATOR) operator/openapi.json
$(OPENAPI_VALIDATOR): tools/checks/requirements.txt
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { apt-get update -q && apt-get install -y -q python3 python3-venv; }
	rm -rf $(CHECKS_VENV)
	python3 -m venv $(CHECKS_VENV)
	$(CHECKS_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $<
	touch $@

## Builds the operator and the example components.
components: fetch
	$(WASM_BUILD) --target $(WASM_TARGET) $(addprefix -p ,$(COMPONENTS))
	$(WASM_BUILD) --target wasm32-wasip1 -p json-job -p rpc-job -p file-rpc-job  # jobs as core modules

## Rebuilds the operator embedded in the binary from operator/ and wit/
## (formatted first: formatting moves the line numbers the binary records).
operator: fmt components
	cp $(WASM_OUT)/wasmatic_operator.wasm host/assets/proxy.wasm

build: components python
	$(CARGO) build --locked --release -p wasmatic

up: build
	./target/release/wasmatic up

# The test `embedded_operator_is_current` fails when host/assets/proxy.wasm
# differs from what operator/ and wit/ build.
## The suites that exercise the node's state run a second time with it in
## PostgreSQL: the same tests, on the other backend. (chain_triggers stays
## on SQLite: it kills a node mid-event, and a fleet records such an event
## as lost where one node alone runs it again; tests/fleet.rs covers that.)
STATE_SUITES := handlers components workflows modules links jobs async_guests

test: components python js openapi lint tools browser postgres
	$(CARGO) test --locked  # the default members: the binary and its library crates
	WASMATIC_TEST_STATE=postgres $(CARGO) test --locked -p wasmatic $(addprefix --test ,$(STATE_SUITES))

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings  # the binary and its library crates
	$(CARGO) clippy --locked --target $(WASM_TARGET) $(addprefix -p ,$(COMPONENTS)) -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip1 -p rpc-job -p file-rpc-job -- -D warnings

fmt: setup
	$(CARGO) fmt --all

## Installs its own tools (wrk, wasmtime-cli of our wasmtime version) once;
## BENCH_SECONDS, BENCH_ROUNDS set the length; `bench/bench.py a b` runs some
## rows into target/bench-partial.json, leaving BENCHMARKS.md alone.
bench: build postgres tools js
	python3 bench/bench.py

## A few seconds a row of a, b and c: ratios printed, nothing written. Run it
## before and after a change to the request path.
bench-quick: build
	BENCH_QUICK=1 python3 bench/bench.py

clean: setup
	$(CARGO) clean
