package firmware

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// probeUnit prints the gateway's unit state on the console every second, so
// the test can see READY=1 ("active running") without a shell in the guest.
const probeUnit = `[Unit]
Description=boot-test probe
After=outpost.service

[Service]
ExecStart=/bin/sh -c 'while :; do echo "PROBE $(systemctl show outpost.service -p ActiveState -p SubState -p NRestarts | sort | tr "\n" " ")boot-config=$(systemctl show outpost-boot-config.service -p ExecMainStatus --value)"; sleep 1; done'
StandardOutput=tty
TTYPath=/dev/ttyAMA0

[Install]
WantedBy=multi-user.target
`

// TestBootQemuArm64 builds the arm64 SD-card image, drops a config onto its
// boot partition the way a user would, boots it under qemu-system-aarch64
// -M virt (TCG) with a serial sensor on an emulated UART fed by the test,
// and checks: READY=1, the boot-partition config applied, /healthz through a
// loopback port forward, and the sensor's readings at a Mosquitto on the host.
func TestBootQemuArm64(t *testing.T) {
	bootTest(t, "arm64", "debootstrap", "qemu-system-aarch64", "qemu-aarch64-static", "mcopy", "mkfs.vfat",
		"sfdisk", "cpio", "depmod", "socat", "unshare")
	start := time.Now()
	deb := debFor(t, "arm64", "arm64")

	work, err := os.MkdirTemp("", "outpost-arm64-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("OUTPOST_KEEP") != "" {
			t.Logf("kept %s", work)
			return
		}
		os.RemoveAll(work)
	})
	extra := filepath.Join(work, "extra")
	unitDir := filepath.Join(extra, "etc/systemd/system")
	if err := os.MkdirAll(filepath.Join(unitDir, "multi-user.target.wants"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(unitDir, "outpost-probe.service"), []byte(probeUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outpost-probe.service", filepath.Join(unitDir, "multi-user.target.wants/outpost-probe.service")); err != nil {
		t.Fatal(err)
	}
	imgStart := time.Now()
	cmd := exec.Command(filepath.Join(dir(t), "image.sh"), deb, filepath.Join(work, "image"))
	cmd.Env = append(os.Environ(), "IMAGE_EXTRA="+extra)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("image.sh: %v\n%s", err, b)
	}
	img := strings.TrimSpace(string(b[strings.LastIndexByte(strings.TrimRight(string(b), "\n"), '\n')+1:]))
	t.Logf("image.sh: %s (%s)", img, fmtDur(time.Since(imgStart)))

	// The user's step: outpost.yaml onto the FAT boot partition.
	upstream := peertest.StartMosquitto(t)
	sub := upstream.Sub(t, "#")
	cfg := `gateway:
  id: arm-gw
  data_dir: /var/lib/outpost
hub:
  listen: 0.0.0.0:1883
http:
  listen: 0.0.0.0:9180
  token_file: /boot/firmware/api.token
cloud:
  protocol: mqtt
  url: mqtt://10.0.2.100:1883
  client_id: arm-gw
devices:
  - id: thermo-1
    serial:
      port: /dev/ttyS0
      baud: 9600
      framing: {delimiter: "\n"}
      parse: {regex: 'T=(?P<temperature>-?[0-9.]+)'}
`
	cfgFile := filepath.Join(work, "outpost.yaml")
	if err := os.WriteFile(cfgFile, []byte(strings.ReplaceAll(cfg, "\n", "\r\n")), 0o644); err != nil { // as saved on Windows
		t.Fatal(err)
	}
	run(t, "mcopy", "-i", img+"@@4M", cfgFile, "::outpost.yaml")
	// An API reachable off loopback needs a bearer token: the user puts it
	// beside the config.
	tokFile := filepath.Join(work, "api.token")
	if err := os.WriteFile(tokFile, []byte("arm-gw-api-token-0123456789\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mcopy", "-i", img+"@@4M", tokFile, "::api.token")

	sockDir, err := os.MkdirTemp("", "oqa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sensorSock := filepath.Join(sockDir, "sensor.sock")
	hubPort, httpPort := peertest.FreePort(t), peertest.FreePort(t)
	imgDir := filepath.Dir(img)
	console := filepath.Join(work, "console.log")
	nic := fmt.Sprintf("user,restrict=on,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:1883,hostfwd=tcp:127.0.0.1:%d-:9180,guestfwd=tcp:10.0.2.100:1883-cmd:socat - TCP:%s",
		hubPort, httpPort, upstream.Addr)
	qemu := exec.Command("qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
		"-accel", "tcg,thread=multi", "-display", "none", "-no-reboot", "-monitor", "none",
		"-serial", "file:"+console,
		"-kernel", filepath.Join(imgDir, "vmlinuz"), "-initrd", filepath.Join(imgDir, "initrd.img"),
		// show_status=error: no "A start job is running" animation, which
		// a slow TCG boot draws into the middle of the services' console lines.
		"-append", "console=ttyAMA0 root=LABEL=RASPIROOT rw panic=-1 systemd.show_status=error",
		"-drive", "file="+img+",format=raw,if=none,id=hd0", "-device", "virtio-blk-pci,drive=hd0",
		"-nic", nic,
		"-chardev", "socket,id=s1,path="+sensorSock+",server=on,wait=off", "-device", "pci-serial,chardev=s1",
		"-qmp", "unix:"+filepath.Join(sockDir, "qmp.sock")+",server=on,wait=off")
	bootStart := time.Now()
	vm := peertest.Start(t, qemu, nil)
	consoleText := func() string { b, _ := os.ReadFile(console); return string(b) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guest console (tail):\n%s", tailStr(consoleText(), 6000))
		}
	})

	// "PROBE ActiveState=active NRestarts=0 SubState=running boot-config=0"
	probe := regexp.MustCompile(`PROBE ActiveState=(\S+) NRestarts=(\d+) SubState=(\S+) boot-config=(\S*)`)
	eventually(t, 5*time.Minute, "outpost.service active (running) in the arm64 guest", func() (bool, string) {
		select {
		case <-vm.Done():
			t.Fatalf("qemu exited: %s", vm.Output())
		default:
		}
		ms := probe.FindAllStringSubmatch(consoleText(), -1)
		if len(ms) == 0 {
			return false, "no probe line yet"
		}
		m := ms[len(ms)-1]
		if m[1] == "failed" {
			t.Fatalf("outpost.service failed: %s", m[0])
		}
		return m[1] == "active" && m[3] == "running", m[0]
	})
	t.Logf("arm64 boot to active (running): %s", fmtDur(time.Since(bootStart)))
	// ExecMainStatus stays empty when the unit's condition (a config on the
	// boot partition) was false: the step must have run, and succeeded.
	if ms := probe.FindAllStringSubmatch(consoleText(), -1); ms[len(ms)-1][4] != "0" {
		t.Errorf("outpost-boot-config.service exit status %q, want 0 (it must have run)", ms[len(ms)-1][4])
	}
	if c := consoleText(); !strings.Contains(c, "apply-boot-config: installed") {
		t.Fatalf("the boot-partition config was not installed; console:\n%s", tailStr(c, 3000))
	}

	eventually(t, 60*time.Second, "/healthz through hostfwd", func() (bool, string) {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	// The sensor: a line every 500 ms on the guest's /dev/ttyS0 (pci-serial).
	sensor, err := net.Dial("unix", sensorSock)
	if err != nil {
		t.Fatal(err)
	}
	defer sensor.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(sensor, "T=%d.5\n", 20+i%5); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	sensorStart := time.Now()
	deadline := time.After(3 * time.Minute)
	for got := false; !got; {
		select {
		case l := <-sub.Lines:
			topic, body, _ := strings.Cut(l, " ")
			if !strings.Contains(topic, "thermo-1") {
				continue
			}
			var r struct {
				Values map[string]float64 `json:"values"`
			}
			if err := json.Unmarshal([]byte(body), &r); err != nil || r.Values["temperature"] < 20 {
				t.Fatalf("upstream got an unexpected reading %q: %v", l, err)
			}
			t.Logf("upstream got: %s (%s after the sensor started)", l, fmtDur(time.Since(sensorStart)))
			got = true
		case <-deadline:
			t.Fatalf("no sensor reading reached the upstream broker; console:\n%s", tailStr(consoleText(), 3000))
		}
	}

	// Clean shutdown over QMP, then the boot partition shows the config was taken.
	qmp(t, filepath.Join(sockDir, "qmp.sock"), "system_powerdown")
	select {
	case <-vm.Done():
	case <-time.After(90 * time.Second):
		t.Fatal("guest did not power off within 90 s")
	}
	t.Logf("arm64 boot, checks and poweroff: %s", fmtDur(time.Since(bootStart)))
	files := run(t, "mdir", "-b", "-i", img+"@@4M", "::")
	if !strings.Contains(files, "outpost.yaml.applied") || strings.Contains(files, "outpost.yaml.errors") {
		t.Errorf("boot partition after boot:\n%s", files)
	}
	t.Logf("TestBootQemuArm64 total: %s", fmtDur(time.Since(start)))
}

// qmp sends one QMP command.
func qmp(t *testing.T, sock, command string) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("qmp: %v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err != nil { // greeting
		t.Fatalf("qmp greeting: %v", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		fmt.Fprintf(c, `{"execute":%s}`+"\n", strconv.Quote(cmd))
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("qmp %s: %v", cmd, err)
			}
			if strings.Contains(l, `"return"`) {
				break
			}
			if strings.Contains(l, `"error"`) {
				t.Fatalf("qmp %s: %s", cmd, l)
			}
		}
	}
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
