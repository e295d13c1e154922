# grapevine — build, package and test.
#
#   make build     the grapevine binary (./build/grapevine)
#   make plugin    the managed-plugin directory build/plugin (offline, seconds)
#   make install   install and enable grapevine:latest on this machine's dockerd
#   make demo      3 simulated hosts, one grapevine network, containers reaching each other
#                  by address and by name, `grapevine status`, then all torn down (root)
#   make image     import the busybox image of the demo and the tests (gvtest/busybox:latest,
#                  made offline from busybox-static) into this machine's dockerd
#   make deps      apt-get install what the tests need, if missing
#   make vet       gofmt, go vet, golangci-lint (pinned, installed into build/tools on first use)
#   make unit      unit tests (with -race, one package at a time: the in-memory gossip clusters
#                  time out when two of them share 2 cores; includes tests in namespaces)
#   make fuzz      each fuzz target for FUZZTIME (default 5s) beyond its checked-in corpus
#   make e2e       end-to-end tests against real dockerd hosts (scripts/harness.sh):
#                  e2e-1 (single host) then e2e-3 (3-host cluster + outsider, Swarm)
#   make test      deps vet unit fuzz e2e — what CI runs (.ci/run); ends with a summary of the
#                  tests skipped for a missing kernel feature (docs/TESTING.md)
#   make bench     grapevine side by side with the underlay, kernel VXLAN and Docker's
#                  overlay/macvlan/bridge on 3 simulated hosts; writes docs/BENCHMARKS.md
#   make clean

GO ?= go
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: build plugin install demo image deps vet unit fuzz e2e e2e-1 e2e-3 test clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o build/grapevine .

plugin:
	scripts/build-plugin.sh

install:
	scripts/install.sh

demo: plugin
	scripts/demo.sh

image:
	scripts/image.sh import

# deps: each Debian package the tests need, installed with apt-get when missing,
# with the reason printed on one line.
deps:
	@missing=(); \
	need() { dpkg-query -W -f='$${Status}' "$$1" 2>/dev/null | grep -q 'install ok installed' && return; \
		echo "deps: installing $$1: $$2"; missing+=("$$1"); }; \
	need docker.io "dockerd and containerd for the simulated hosts of e2e/ and make bench"; \
	need iptables "the driver's NAT, published ports and firewall, and copied into the plugin rootfs"; \
	need busybox-static "the static busybox that the harness's container images are made of"; \
	need docker-compose "e2e/compose_test.go runs a compose project on grapevine"; \
	need iproute2 "ip netns: the harness's simulated hosts and the namespace tests"; \
	need file "the harness checks that /bin/busybox is statically linked"; \
	if [ $${#missing[@]} -gt 0 ]; then \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}" >/dev/null; \
	fi

# golangci-lint, pinned: `go install` builds it from the Go module proxy into
# build/tools once (a few minutes on 2 cores), then make vet reuses it.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(CURDIR)/build/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)

$(GOLANGCI_LINT):
	@echo "vet: installing golangci-lint $(GOLANGCI_LINT_VERSION) into build/tools with go install (the linters of .golangci.yml)"
	@mkdir -p $(CURDIR)/build/tools/bin
	GOBIN=$(CURDIR)/build/tools/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(CURDIR)/build/tools/bin/golangci-lint $@

vet: $(GOLANGCI_LINT)
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './build/*' -not -path './.git/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	@go_line=$$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod); \
	grep -q "^FROM golang:$$go_line-" Dockerfile || { echo "Dockerfile: FROM golang must be go.mod's go $$go_line"; exit 1; }
	@for d in $$(find . -name '*.go' -not -path './build/*' -not -path './.git/*' -exec dirname {} \; | sed 's|^\./||' | sort -u); do \
		[ "$$d" = . ] || grep -q "\`$$d/\`" README.md || { echo "README.md: the layout table lacks \`$$d/\`"; exit 1; }; \
	done; \
	for f in docs/*.md; do grep -q "$$f" README.md || { echo "README.md: the layout table does not link $$f"; exit 1; }; done
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	$(GOLANGCI_LINT) run ./...
	$(GOLANGCI_LINT) run --build-tags e2e ./e2e/...

unit:
	$(GO) test -race -count=1 -p 1 ./...

# Fuzz targets: package:Target. `go test` runs each one's seed corpus (testdata/fuzz)
# as a plain test; `make fuzz` also mutates inputs for FUZZTIME per target.
FUZZTIME ?= 5s
FUZZ_TARGETS := gossip:FuzzDecode gossip:FuzzApply \
	driver:FuzzParseNetwork driver:FuzzEndpointRecord driver:FuzzNetworkRecord \
	ipam:FuzzRequestAddress ipam:FuzzBlockRecord ipam:FuzzLedger ipam:FuzzAcceptorState \
	plugin:FuzzHandlers plugin:FuzzParseSettings names:FuzzDecode names:FuzzTapAnswer \
	internal/ipv4pkt:FuzzParseUDP

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		log=build/fuzz-$$fn.log; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg/ >$$log 2>&1 && continue; \
		if grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
			echo "fuzz $$fn: go's fuzz coordinator missed its own -fuzztime deadline (golang/go#75804) and wrote no failing input; replaying the corpus"; \
			$(GO) test -count=1 -run "^$$fn\$$" ./$$pkg/ || exit 1; \
		else cat $$log; exit 1; fi; \
	done

E2E := GV_E2E_NO_BUILD=1 PLUGIN_DIR=$(CURDIR)/build/plugin $(GO) test -tags e2e -race -count=1 -v

e2e: e2e-1 e2e-3

e2e-1: plugin
	GV_E2E_HOSTS=1 $(E2E) -timeout 25m ./e2e/

e2e-3: plugin
	GV_E2E_HOSTS=3 $(E2E) -timeout 25m ./e2e/

# Tests that find a kernel feature missing (internal/testreq) skip, or fail when
# GV_REQUIRE (e.g. GV_REQUIRE=vlan,ipvs,wireguard) names it; each skip is appended
# to GV_SKIP_LOG, which `make test` empties first and sums up last, keeping the
# exit status of the run.
export GV_SKIP_LOG ?= $(CURDIR)/build/skipped-features.txt

test:
	@mkdir -p "$(dir $(GV_SKIP_LOG))" && rm -f "$(GV_SKIP_LOG)"
	@rc=0; $(MAKE) --no-print-directory deps vet unit fuzz e2e || rc=$$?; \
	echo; echo "== skipped for a missing kernel feature (GV_REQUIRE=<feature>,... turns these into failures) =="; \
	if [ -s "$(GV_SKIP_LOG)" ]; then \
		sort "$(GV_SKIP_LOG)"; \
		awk '{ n[$$2]++ } END { for (f in n) printf "%s: %d test(s) skipped\n", f, n[f] }' "$(GV_SKIP_LOG)" | sort; \
	else echo "none"; fi; \
	exit $$rc

clean:
	rm -rf build

# make bench: data paths, convergence, docker run, IPAM, gossip scale and plugin RSS on a
# 3-host harness (scripts/bench.sh, driver in bench/); prints and writes docs/BENCHMARKS.md
.PHONY: bench
bench: deps
	scripts/bench.sh
