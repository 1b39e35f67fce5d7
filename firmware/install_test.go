package firmware

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// checkInstalled asserts what the .deb's maintainer scripts must have done in
// root: the user and its groups, the data directory, the config's
// permissions, the enabled unit, a unit that verifies against the image's
// own files, and a default config that `outpost check` accepts.
func checkInstalled(t *testing.T, root string) {
	t.Helper()
	id := mustChroot(t, root, "id", "outpost")
	for _, g := range []string{"(outpost)", "(dialout)", "(gpio)"} {
		if !strings.Contains(id, g) {
			t.Errorf("id outpost = %q, lacks %s", strings.TrimSpace(id), g)
		}
	}
	st := mustChroot(t, root, "stat", "-c", "%a %U %G", "/var/lib/outpost", "/etc/outpost/outpost.yaml")
	if want := "750 outpost outpost\n640 root outpost\n"; st != want {
		t.Errorf("data dir and config: %q, want %q", st, want)
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/outpost.service")
	if dest, err := os.Readlink(wants); err != nil || !strings.HasSuffix(dest, "/outpost.service") {
		t.Errorf("unit not enabled: %s -> %q (%v)", wants, dest, err)
	}
	// The unit against the image's own /bin/kill and /usr/bin/outpost.
	if out, err := runErr("systemd-analyze", "verify", "--man=no", "--root="+root, "outpost.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify --root=image outpost.service: %v\n%s", err, out)
	}
	if out, err := chroot(root, "/usr/bin/outpost", "check", "-c", "/etc/outpost/outpost.yaml"); err != nil {
		t.Errorf("the packaged default config does not pass outpost check: %v\n%s", err, out)
	}
	if out := mustChroot(t, root, "/usr/bin/outpost", "version"); !regexp.MustCompile(`\S`).MatchString(out) {
		t.Errorf("outpost version printed nothing")
	}
}

// checkRemovePurge runs the package's remove → reinstall → purge cycle in a
// stopped root: remove keeps the queue and the config and masks the unit;
// reinstalling unmasks and re-enables it and keeps the edited config; purge
// removes config, queue, mask and enablement.
func checkRemovePurge(t *testing.T, root, deb, marker string) {
	t.Helper()
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }
	entries := func(p string) int { es, _ := os.ReadDir(filepath.Join(root, p)); return len(es) }
	queue := entries("var/lib/outpost")
	if queue == 0 {
		t.Fatal("/var/lib/outpost is empty after running the gateway; nothing to keep")
	}
	mustChroot(t, root, "dpkg", "-r", "outpost")
	if exists("usr/bin/outpost") {
		t.Error("remove left /usr/bin/outpost")
	}
	if n := entries("var/lib/outpost"); n != queue {
		t.Errorf("remove changed the data dir: %d entries, had %d", n, queue)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/outpost/outpost.yaml")); err != nil || !strings.Contains(string(b), marker) {
		t.Errorf("remove did not keep the edited config: %v", err)
	}
	if dest, _ := os.Readlink(filepath.Join(root, "etc/systemd/system/outpost.service")); dest != "/dev/null" {
		t.Errorf("remove did not mask the unit (link -> %q)", dest)
	}

	installDeb(t, root, deb)
	if exists("etc/systemd/system/outpost.service") {
		t.Error("reinstall left the mask in place")
	}
	if !exists("etc/systemd/system/multi-user.target.wants/outpost.service") {
		t.Error("reinstall did not enable the unit")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/outpost/outpost.yaml")); !strings.Contains(string(b), marker) {
		t.Error("reinstall replaced the edited config")
	}
	if n := entries("var/lib/outpost"); n != queue {
		t.Errorf("reinstall changed the data dir: %d entries, had %d", n, queue)
	}

	mustChroot(t, root, "dpkg", "-P", "outpost")
	for _, p := range []string{"etc/outpost", "var/lib/outpost", "etc/systemd/system/outpost.service",
		"etc/systemd/system/multi-user.target.wants/outpost.service", "usr/bin/outpost"} {
		if exists(p) {
			t.Errorf("purge left /%s", p)
		}
	}
	if out, _ := chroot(root, "dpkg-statoverride", "--list", "/etc/outpost/outpost.yaml"); strings.TrimSpace(out) != "" {
		t.Errorf("purge left a statoverride: %s", out)
	}
}
