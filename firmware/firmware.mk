# firmware.mk — cross builds, .deb packages, the arm64 image and the boot
# tests. Included from the top Makefile (`-include firmware/firmware.mk`);
# see firmware/README.md.
#
#   make firmware        static binaries for amd64, arm64, armv7, armv6 + their .debs in dist/
#   make deb             the .debs only (builds the binaries they need)
#   make firmware-check  cheap: unit verify + security score + amd64 .deb contents (seconds)
#   make firmware-test   boot test: amd64 .deb in a Debian 12 rootfs under systemd-nspawn (~1-2 min, root)
#   make firmware-test-arm64  the arm64 image under qemu-system-aarch64 -M virt (TCG, slow: ~8 min cold)
#   make firmware-test-arm32  armhf + armel .debs installed and started in Debian 12 roots under qemu-user
#   make firmware-tools  install (root) every host tool the boot tests call (firmware/tools.sh)
#   make image           the arm64 image recipe: rootfs + .deb + UART + first boot (+ SD image)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# The commit date, not the build date, so a commit always builds the same bytes.
FW_DATE ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)
DIST    ?= dist
GO      ?= go
FW_GOFLAGS := CGO_ENABLED=0 GOOS=linux
FW_LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(FW_DATE)
FW_TARGETS := amd64 arm64 armv7 armv6
FW_SRC := $(shell find cmd gateway store cloudlink adapters -name '*.go' ! -name '*_test.go' 2>/dev/null) go.mod go.sum
FW_PKGFILES := systemd/outpost.service systemd/outpost.sysusers systemd/outpost.tmpfiles \
	$(wildcard firmware/deb/*) firmware/mkdeb.sh

fw_goarch = $(if $(filter armv%,$(1)),arm,$(1))
fw_goarm  = $(patsubst armv%,%,$(filter armv%,$(1)))
fw_debarch = $(if $(filter armv7,$(1)),armhf,$(if $(filter armv6,$(1)),armel,$(1)))
fw_debver := $(shell firmware/debversion.sh '$(VERSION)')

FW_BINS := $(foreach t,$(FW_TARGETS),$(DIST)/outpost-linux-$(t))
FW_DEBS := $(foreach t,$(FW_TARGETS),$(DIST)/outpost_$(fw_debver)_$(call fw_debarch,$(t)).deb)

.PHONY: firmware deb firmware-bins firmware-check firmware-tools firmware-test firmware-test-arm64 firmware-test-arm32 image

firmware: firmware-bins deb

firmware-bins: $(FW_BINS)
	@printf '%-28s %10s\n' binary bytes; for f in $(FW_BINS); do printf '%-28s %10d\n' $$(basename $$f) $$(stat -c %s $$f); done

$(DIST)/outpost-linux-%: $(FW_SRC)
	@mkdir -p $(DIST)
	TZ=UTC $(FW_GOFLAGS) GOARCH=$(call fw_goarch,$*) GOARM=$(call fw_goarm,$*) \
		$(GO) build -trimpath -buildvcs=false -ldflags '$(FW_LDFLAGS)' -o $@ ./cmd/outpost

deb: $(FW_DEBS)
	@ls -l $(FW_DEBS)

# One rule per target: the .deb name carries the Debian arch, the binary the Go one.
define fw_deb_rule
$(DIST)/outpost_$(fw_debver)_$(call fw_debarch,$(1)).deb: $(DIST)/outpost-linux-$(1) $(FW_PKGFILES)
	VERSION='$(VERSION)' firmware/mkdeb.sh $(call fw_debarch,$(1)) $$< $(DIST) >/dev/null
endef
$(foreach t,$(FW_TARGETS),$(eval $(call fw_deb_rule,$(t))))

FW_DEB_AMD64 := $(DIST)/outpost_$(fw_debver)_amd64.deb
FW_DEB_ARM64 := $(DIST)/outpost_$(fw_debver)_arm64.deb
FW_DEB_ARM32 := $(DIST)/outpost_$(fw_debver)_armhf.deb $(DIST)/outpost_$(fw_debver)_armel.deb

## firmware-tools: the host packages the boot tests and the image need, by explicit list (root)
firmware-tools:
	@firmware/tools.sh

## firmware-check: unit verify + security score (go test ./systemd) and the amd64 .deb's contents
firmware-check: $(FW_DEB_AMD64)
	$(GO) test -count=1 ./systemd/
	firmware/check-deb.sh $(FW_DEB_AMD64)

## firmware-test: amd64 .deb installed into Debian 12, booted with systemd-nspawn (root)
firmware-test: $(FW_DEB_AMD64) firmware-tools
	OUTPOST_BOOT_TEST=nspawn OUTPOST_DEB=$(abspath $(FW_DEB_AMD64)) \
		$(GO) test -count=1 -timeout 20m -v -run 'TestBootNspawn' ./firmware/

## firmware-test-arm64: the arm64 image under qemu-system-aarch64 -M virt with a serial sensor
firmware-test-arm64: $(FW_DEB_ARM64) firmware-tools
	OUTPOST_BOOT_TEST=arm64 OUTPOST_DEB=$(abspath $(FW_DEB_ARM64)) \
		$(GO) test -count=1 -timeout 40m -v -run 'TestBootQemuArm64' ./firmware/

## firmware-test-arm32: the armhf and armel .debs installed and started under qemu-user (Pi 2, Pi 1/Zero CPUs)
firmware-test-arm32: $(FW_DEB_ARM32) firmware-tools
	OUTPOST_BOOT_TEST=arm32 OUTPOST_DEB='$(abspath $(FW_DEB_ARM32))' \
		$(GO) test -count=1 -timeout 40m -v -run 'TestInstall32' ./firmware/

## image: the arm64 root filesystem and SD-card image (firmware/build/)
image: $(FW_DEB_ARM64) firmware-tools
	firmware/image.sh $(FW_DEB_ARM64)
