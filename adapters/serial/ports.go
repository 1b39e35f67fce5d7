package serial

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// PortInfo is one serial port found on this machine.
type PortInfo struct {
	Path   string   // /dev/ttyUSB0
	ByID   []string // stable names in /dev/serial/by-id that point at it
	Driver string   // kernel driver, e.g. ftdi_sio, cdc_acm, serial8250
}

// Ports lists the serial ports the kernel knows about (from /sys/class/tty),
// with their stable /dev/serial/by-id names. Legacy 8250 slots with no UART
// behind them are left out.
func Ports() ([]PortInfo, error) {
	return listPorts("/sys/class/tty", "/dev")
}

func listPorts(sysTTY, dev string) ([]PortInfo, error) {
	ents, err := os.ReadDir(sysTTY)
	if err != nil {
		return nil, err
	}
	byID := map[string][]string{} // tty name -> by-id paths
	ids, _ := filepath.Glob(filepath.Join(dev, "serial", "by-id", "*"))
	for _, link := range ids {
		target, err := os.Readlink(link)
		if err != nil {
			continue
		}
		name := filepath.Base(target)
		byID[name] = append(byID[name], link)
	}
	var out []PortInfo
	for _, e := range ents {
		name := e.Name()
		dir := filepath.Join(sysTTY, name)
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue // virtual: console, pty, vt
		}
		if t, err := os.ReadFile(filepath.Join(dir, "type")); err == nil && strings.TrimSpace(string(t)) == "0" {
			continue // an 8250 slot with no UART (PORT_UNKNOWN)
		}
		p := PortInfo{Path: filepath.Join(dev, name), ByID: byID[name]}
		p.Driver = driverOf(filepath.Join(dir, "device"))
		slices.Sort(p.ByID)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b PortInfo) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// driverOf names the driver of a tty's device, skipping the kernel's
// serial-base "port" and "ctrl" layers (6.5+) to reach the UART driver.
func driverOf(device string) string {
	dir, err := filepath.EvalSymlinks(device)
	if err != nil {
		return ""
	}
	for range 4 {
		drv, err := filepath.EvalSymlinks(filepath.Join(dir, "driver"))
		if err == nil && filepath.Base(filepath.Dir(filepath.Dir(drv))) != "serial-base" {
			return filepath.Base(drv)
		}
		dir = filepath.Dir(dir)
	}
	return ""
}
