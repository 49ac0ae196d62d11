# herald: build and test. `make test` is what CI runs (.ci/run): provision the real servers,
# then unit tests, integration tests against those servers, and a short fuzz of every target.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
export GOTOOLCHAIN := local

GO ?= go
# A count, not a duration: with Go 1.26 a duration-bounded fuzz run can fail with a bare
# "context deadline exceeded" at its end (golang/go#75804, fixed in Go 1.27); a count
# never hits that deadline. 200,000 inputs take 7-36 s per target here.
FUZZTIME ?= 200000x
# Integration results depend on servers outside the Go build cache's view: never cache them.
INTEGRATION_FLAGS ?= -count=1
# Packages whose tests need no servers: everything outside ./integration/...
UNIT_PKGS = $(GO) list ./... | grep -v -E '/integration(/|$$)'

# Version stamps (herald version): `git describe`, the commit, and the commit's date as the
# build date, so that two builds of one commit are byte-identical (make release).
VERSION ?= $(shell cmd/herald/packaging/version.sh)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DATE ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS = -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
export VERSION COMMIT DATE SOURCE_DATE_EPOCH LDFLAGS
# Release platforms (linux/arm is ARMv7). `make cross`, part of `make test`, compiles and
# vets one per OS and word size (CROSS_TARGETS): each target costs a full compile of the
# dependencies on a fresh machine, and the others differ only in the compiler's backend.
# `make cross CROSS_TARGETS="$(RELEASE_TARGETS)"` checks them all; make release builds them all.
RELEASE_TARGETS ?= linux/amd64 linux/arm64 linux/arm darwin/amd64 darwin/arm64 freebsd/amd64 windows/amd64
CROSS_TARGETS ?= linux/arm darwin/arm64 freebsd/amd64 windows/amd64
export RELEASE_TARGETS

.PHONY: test test-deps build demo unit cross release deb image package-test integration integration-race fuzz bench bench-consul clean

test:
	@$(MAKE) --no-print-directory test-deps
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory cross
	@$(MAKE) --no-print-directory package-test
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory fuzz

# Installs etcd, ZooKeeper, HAProxy and nginx from Debian (as root, only what is missing)
# and builds consul into ~/.cache/herald-test (once per version).
test-deps:
	integration/scripts/provision.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/herald ./cmd/herald

# The main job on the embedded default: the file backend and examples/. Each example's
# check_cmd runs the real haproxy -c / nginx -t, so those are installed first if missing.
demo: build
	@command -v haproxy >/dev/null && command -v nginx >/dev/null || integration/scripts/provision.sh --packages haproxy nginx
	@for ex in haproxy nginx nginx-vhosts; do \
	  echo "== bin/herald render --confdir examples/$$ex --backend file://examples/$$ex/data.yaml"; \
	  bin/herald render --confdir examples/$$ex --backend file://examples/$$ex/data.yaml; \
	done
	@echo "== rendered:"; ls -l examples/haproxy/out/haproxy.cfg examples/nginx/out/nginx.conf examples/nginx-vhosts/out/nginx.conf examples/nginx-vhosts/out/sites/*.conf

unit:
	$(GO) vet ./...
	pkgs=$$($(UNIT_PKGS)); $(GO) test -race $$pkgs

# Each of CROSS_TARGETS compiles (go build ./...) and passes go vet (the packages outside
# ./integration, whose harness is Linux-only). Cached after the first run.
cross:
	@pkgs=$$($(UNIT_PKGS)); \
	for t in $(CROSS_TARGETS); do \
	  echo "cross: $$t"; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} GOARM=7 CGO_ENABLED=0 $(GO) build ./...; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} GOARM=7 CGO_ENABLED=0 $(GO) vet $$pkgs; \
	done

# dist/: a reproducible static binary per platform in a tarball with README and LICENSE,
# and SHA256SUMS.
release:
	GO=$(GO) cmd/herald/packaging/release.sh

# dist/herald_<version>_<arch>.deb (nfpm): binary, unit, /etc/herald, /etc/default/herald,
# man page, completions, the herald user. DEB_ARCH=arm64 or armhf cross-builds.
deb:
	GO=$(GO) cmd/herald/packaging/deb.sh

# herald's container image (cmd/herald/packaging/Containerfile, FROM scratch), built with podman.
image:
	GO=$(GO) cmd/herald/packaging/image.sh

# The package installs, works and goes away (dpkg -i, herald version, man page,
# systemd-analyze verify of its unit, dpkg -r, dpkg -P; as root, leaves nothing), and the
# image runs with podman (version; exec as PID 1 reaping an orphan).
package-test:
	@rm -f dist/herald_*.deb
	@$(MAKE) --no-print-directory deb
	cmd/herald/packaging/test-deb.sh dist/herald_*_$(shell $(GO) env GOARCH).deb
	IMAGE=herald-test:$(COMMIT) GO=$(GO) cmd/herald/packaging/image.sh
	code=0; cmd/herald/packaging/test-image.sh herald-test:$(COMMIT) || code=$$?; \
	  podman rmi -f herald-test:$(COMMIT) >/dev/null; exit $$code

integration:
	$(GO) test -p 2 -timeout 40m $(INTEGRATION_FLAGS) ./integration/...

# The integration suite with herald itself built with the race detector (slower; not part
# of `make test`): a data race in the daemon under real servers fails the test that saw it.
integration-race:
	HERALD_TEST_RACE=1 $(GO) test -p 2 -timeout 60m $(INTEGRATION_FLAGS) ./integration/...

# The watch benchmarks (figures in the README) on the disk, tmpfs and a journaled ext4.
bench:
	GO=$(GO) integration/scripts/bench.sh

# herald side by side with consul-template on Consul KV (builds consul-template into the
# test cache first).
bench-consul:
	BENCH=BenchmarkWatchConsul BENCHTIME=60x GO=$(GO) integration/scripts/bench.sh

# Runs every fuzz target of every (non-integration) package for FUZZTIME (inputs or time) each. Targets
# are discovered with `go test -list`, so new ones are picked up without editing this.
fuzz:
	@pkgs=$$($(UNIT_PKGS) | xargs $(GO) list -f '{{.ImportPath}}={{.Dir}}'); \
	for line in $$pkgs; do \
	  pkg=$${line%%=*}; dir=$${line#*=}; \
	  grep -qs '^func Fuzz' "$$dir"/*_test.go || continue; \
	  listed=$$($(GO) test -list '^Fuzz' "$$pkg"); \
	  for target in $$(grep '^Fuzz' <<<"$$listed" || true); do \
	    echo "fuzz: $$pkg $$target for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	  done; \
	done

clean:
	rm -rf bin dist
