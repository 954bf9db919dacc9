# Thin wrappers around scripts/. See scripts/*.sh for details.
# Extra go test arguments: make test TEST_ARGS='-run Foo ./websocket/'
# Longer fuzzing: make fuzz FUZZTIME=5m

TEST_ARGS ?=
FUZZTIME ?= 10s

.PHONY: run test services lint build bench fuzz

run:
	go run ./cmd/streamspace-realtime serve --dev

test:
	bash scripts/test.sh $(TEST_ARGS)

fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

services:
	bash scripts/services.sh

lint:
	bash scripts/lint.sh

# Pure Go (modernc.org/sqlite needs no C): one binary for any Linux of the architecture, and an
# idle process 1.5 MiB smaller than a cgo build, which maps the C library (docs/PERFORMANCE.md).
build:
	CGO_ENABLED=0 go build -o bin/streamspace-realtime ./cmd/streamspace-realtime

bench:
	go test -run '^$$' -bench . -benchmem ./...
