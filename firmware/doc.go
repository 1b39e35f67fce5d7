// Package firmware holds the scripts that turn the outpost binary into
// something a field device runs, and the tests that boot it:
//
//   - build.sh: static, stripped cross builds (amd64, arm64, armv7, armv6);
//   - mkdeb.sh: one .deb per architecture (binary, unit, sysusers/tmpfiles,
//     udev rule, default config as a conffile, maintainer scripts in deb/);
//   - check-deb.sh: cheap checks of a built package;
//   - rootfs.sh: cached Debian 12 root filesystems made with debootstrap;
//   - image.sh: the arm64 image recipe (UART, first boot from the boot
//     partition, SD-card layout for a Raspberry Pi);
//   - firmware.mk: the make targets (firmware, deb, image, firmware-check,
//     firmware-test, firmware-test-arm64).
//
// The Go tests here are the boot tests. They run only when asked
// (OUTPOST_BOOT_TEST=nspawn or arm64, set by the make targets) because they
// need root, debootstrap and minutes; under CI=true a missing tool fails
// them instead of skipping.
package firmware
