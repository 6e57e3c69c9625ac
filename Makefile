# shippy: go-micro user-service, email-service and CLI.
# The go.mod names toolchain go1.27.3 (security fixes in the standard library);
# GOTOOLCHAIN=auto lets any Go >= 1.21 fetch it through the module proxy.
export GOTOOLCHAIN := auto

BIN        := bin
PROGRAMS   := shippy-user-service shippy-email-service shippy-user-cli
GO_FILES    = $(shell git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tools/*')
TESTFLAGS  ?=
FUZZTIME   ?= 30s
BENCH_COUNT ?= 1

.PHONY: all build test test-short proto proto-check lint vet fmt run-user run-email run-cli \
        demo up down vulncheck bench fuzz clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build the three programs into bin/
	@mkdir -p $(BIN)
	go build -trimpath -o $(BIN)/ $(addprefix ./,$(PROGRAMS))

test: ## run every test (PostgreSQL tests need TEST_DATABASE_URL; see README)
	go test -count=1 $(TESTFLAGS) ./...

test-short: ## unit tests only
	go test -short -count=1 $(TESTFLAGS) ./...

proto: ## regenerate proto/ (needs protoc: apt-get install protobuf-compiler)
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
	protoc --plugin=protoc-gen-go="$$(go tool -n protoc-gen-go)" \
	       --plugin=protoc-gen-micro="$$(go tool -n protoc-gen-micro)" \
	       --go_out=. --go_opt=paths=source_relative \
	       --micro_out=. --micro_opt=paths=source_relative \
	       proto/user/user.proto

proto-check: proto ## fail when the committed generated code is stale
	@git diff --exit-code -- proto/ || { echo "proto/: generated code is stale; run 'make proto' and commit" >&2; exit 1; }

fmt: ## format the code
	gofmt -w $(GO_FILES)

lint: vet ## gofmt and go vet
	@out=$$(gofmt -l $(GO_FILES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

run-user: ## run the user-service (embedded SQLite unless DB_* or DATABASE_URL is set)
	$(MAKE) -C shippy-user-service run

run-email: ## run the email-service
	$(MAKE) -C shippy-email-service run

run-cli: ## run the CLI: make run-cli ARGS="list"
	$(MAKE) -C shippy-user-cli run ARGS="$(ARGS)"

demo: build ## the whole pipeline once: create a user, wait for the welcome email
	bash scripts/demo.sh

up: build ## start both services in the background (logs in .run/stack/)
	bash scripts/stack.sh up

down: ## stop what 'make up' started
	bash scripts/stack.sh down

vulncheck: ## govulncheck against an offline database built from golang.org/x/vulndb
	bash tools/vulncheck/run.sh

bench: ## every benchmark pair against its baseline in the same run (needs TEST_DATABASE_URL; see BENCH.md)
	BENCH_COUNT=$(BENCH_COUNT) bash bench/run.sh

fuzz: ## run every fuzz target for FUZZTIME each
	bash scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN) .run
