# shippy: go-micro user-service, email-service and CLI.
# The go.mod names toolchain go1.27.3 (security fixes in the standard library);
# GOTOOLCHAIN=auto lets any Go >= 1.21 fetch it through the module proxy.
export GOTOOLCHAIN := auto

BIN        := bin
PROGRAMS   := shippy-user-service shippy-email-service shippy-user-cli
# make up and make demo run a JetStream server built from the module the tests use.
NATS_SERVER := github.com/nats-io/nats-server/v2
GO_FILES    = $(shell git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tools/*')
TESTFLAGS  ?=
FUZZTIME   ?= 30s
TUTORIAL_PB := e2e/tutorial/testdata/tutorialpb
TUTORIAL_PB_M = Muser.proto=github.com/shippy/shippy/$(TUTORIAL_PB);go_micro_srv_user
BENCH_COUNT ?= 1

.PHONY: all build test test-short proto proto-check proto-breaking proto-release lint vet fmt run-user run-email run-cli \
        demo up down vulncheck bench fuzz clean help compose-env container-bases compose-test kubecheck tls-certs micro

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build the three programs, and the nats-server make up runs, into bin/
	@mkdir -p $(BIN)
	go build -trimpath -o $(BIN)/ $(addprefix ./,$(PROGRAMS)) $(NATS_SERVER)

test: ## run every test (PostgreSQL tests need TEST_DATABASE_URL; see README), and kubecheck
	go test -count=1 $(TESTFLAGS) ./...
	$(MAKE) --no-print-directory kubecheck

kubecheck: ## validate deploy/kubernetes against the Kubernetes API types, offline (module tools/kubecheck)
	cd tools/kubecheck && go test -count=1 $(TESTFLAGS) ./...

test-short: ## unit tests only
	go test -short -count=1 $(TESTFLAGS) ./...

proto: ## regenerate proto/ and the tutorial's copy in e2e/tutorial (needs protoc: apt-get install protobuf-compiler)
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
	protoc --plugin=protoc-gen-go="$$(go tool -n protoc-gen-go)" \
	       --plugin=protoc-gen-micro="$$(go tool -n protoc-gen-micro)" \
	       --go_out=. --go_opt=paths=source_relative \
	       --micro_out=. --micro_opt=paths=source_relative \
	       proto/user/user.proto
	@# The tutorial's own user.proto, for e2e/tutorial; it names no Go package.
	protoc -I $(TUTORIAL_PB) --plugin=protoc-gen-go="$$(go tool -n protoc-gen-go)" \
	       --plugin=protoc-gen-micro="$$(go tool -n protoc-gen-micro)" \
	       --go_out=$(TUTORIAL_PB) --go_opt='paths=source_relative,$(TUTORIAL_PB_M)' \
	       --micro_out=$(TUTORIAL_PB) --micro_opt='paths=source_relative,$(TUTORIAL_PB_M)' \
	       user.proto

proto-check: proto ## fail when the committed generated code is stale
	@git diff --exit-code -- proto/ $(TUTORIAL_PB) || { echo "generated protobuf code is stale; run 'make proto' and commit" >&2; exit 1; }

proto-breaking: ## fail when proto/ breaks the wire or JSON format of proto/released.txtpb (and origin/main)
	bash tools/buf/breaking.sh

proto-release: ## record proto/ as released: the baseline proto-breaking compares against
	bash tools/buf/breaking.sh --release

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

demo: build ## the whole pipeline once on a JetStream nats-server of its own: create a user, wait for the welcome email
	bash scripts/demo.sh

up: build ## start both services (and, with no MICRO_BROKER, a JetStream nats-server) in the background; logs in .run/stack/
	bash scripts/stack.sh up

down: ## stop everything 'make up' started
	bash scripts/stack.sh down

micro: ## bin/micro: go-micro's own CLI (micro call, micro api), v6.3.10 from module tools/micro, static
	@mkdir -p $(BIN)
	CGO_ENABLED=0 go -C tools/micro build -trimpath -o $(CURDIR)/$(BIN)/micro go-micro.dev/v6/cmd/micro

compose-env: ## write .env for docker-compose.yml: JWT_SECRET and each program's NATS password (random, kept)
	sh scripts/compose-env.sh

container-bases: ## local stand-ins for the base images docker-compose.yml names, where they are absent (podman)
	bash scripts/container-bases.sh

compose-test: ## the README's docker-compose commands for real, on podman: build, start, check, down -v
	bash scripts/compose-test.sh

tls-certs: ## a local CA and the user-service's certificate in .run/tls/, for docker-compose.tls.yml (needs openssl)
	bash scripts/tls-certs.sh .run/tls

vulncheck: ## govulncheck against an offline database built from golang.org/x/vulndb
	bash tools/vulncheck/run.sh

bench: ## every benchmark pair against its baseline in the same run (needs TEST_DATABASE_URL; see BENCH.md)
	BENCH_COUNT=$(BENCH_COUNT) bash bench/run.sh

fuzz: ## run every fuzz target for FUZZTIME each
	bash scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN) .run
