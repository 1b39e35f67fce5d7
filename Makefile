# Outpost: `make check` is the test command (README, .ci/run).
SHELL   := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
TESTFLAGS ?=

.PHONY: build check peers vet test bench fuzz fuzz-short soak clean

## build: the static, stripped binary in bin/outpost
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/outpost ./cmd/outpost

## check: install missing test peers (as root), then vet, every test with -race,
## and a bounded run of every fuzz target with its exec rate
check: peers vet test fuzz-short

peers:
	@bash .ci/peers

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

test:
	$(GO) test -race -count=1 -timeout 10m $(TESTFLAGS) ./...

## bench: Go benchmarks of the hot paths
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz-short: every fuzz target for FUZZSHORT (11s) each, inside `make check`,
## with a table of exec rates (.ci/fuzz)
FUZZSHORT ?= 11s
fuzz-short:
	@GO=$(GO) bash .ci/fuzz $(FUZZSHORT)

## fuzz: every fuzz target for FUZZTIME (2m) each, going on from what earlier
## runs found (Go's fuzz cache) and minimizing what it finds
FUZZTIME ?= 2m
fuzz:
	@GO=$(GO) FUZZCACHE=keep FUZZMINIMIZETIME=$${FUZZMINIMIZETIME:-60s} bash .ci/fuzz $(FUZZTIME)

## soak: the long fault-injection runs
soak:
	OUTPOST_SOAK=1 $(GO) test -race -timeout 120m -run 'Soak|Crash|Fault' -v ./...

clean:
	rm -rf bin dist

-include firmware/firmware.mk
