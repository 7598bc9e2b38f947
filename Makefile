# wasmatic — build, test and run.
#
#   make up      build everything and start a node on :$WASMATIC_PORT (8080)
#   make test    build the components and run every test, lints included
#   make bench   the node beside `wasmtime serve`, on loopback: BENCHMARKS.md

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
WASM_OUT    := target/$(WASM_TARGET)/release
COMPONENTS  := wasmatic-operator echo gecko custom-operator misbehave hello-proxy json-job caesar typed

.PHONY: setup components operator build up test lint fmt bench clean

## Installs the toolchain pieces the build needs (idempotent).
setup:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl; }  # the README test runs curl

## Builds the operator and the example components.
components: setup
	$(CARGO) build --locked --target $(WASM_TARGET) --release $(addprefix -p ,$(COMPONENTS))
	$(CARGO) build --locked --target wasm32-wasip1 --release -p json-job  # the same job as a core module

## Rebuilds the operator embedded in the binary from operator/ and wit/
## (formatted first: formatting moves the line numbers the binary records).
operator: fmt components
	cp $(WASM_OUT)/wasmatic_operator.wasm host/assets/proxy.wasm

build: components
	$(CARGO) build --locked --release -p wasmatic

up: build
	./target/release/wasmatic up

# The test `embedded_operator_is_current` fails when host/assets/proxy.wasm
# differs from what operator/ and wit/ build.
test: components lint
	$(CARGO) test --locked -p wasmatic

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked -p wasmatic --all-targets -- -D warnings
	$(CARGO) clippy --locked --target $(WASM_TARGET) $(addprefix -p ,$(COMPONENTS)) -- -D warnings

fmt:
	$(CARGO) fmt --all

## Installs its own tools (wrk, wasmtime-cli of our wasmtime version) once;
## BENCH_SECONDS, BENCH_ROUNDS set the length; `bench/bench.py a b` runs some.
bench: build
	python3 bench/bench.py

clean:
	$(CARGO) clean
