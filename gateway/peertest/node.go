package peertest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NodeSDKPackages are the npm packages, at the versions .ci/peers installs,
// that make up Microsoft's Azure IoT device SDK for Node.js.
var NodeSDKPackages = map[string]string{
	"azure-iot-device":      "1.18.4",
	"azure-iot-device-mqtt": "1.16.4",
}

// DefaultNodeCache is where .ci/peers installs the Node.js SDK;
// $OUTPOST_NODE_CACHE overrides it (for both).
const DefaultNodeCache = "/var/cache/outpost/node"

// NodeSDK is an installed Node.js runtime with the Azure IoT device SDK.
type NodeSDK struct {
	Node    string // the node binary
	Modules string // the node_modules directory holding the SDK
}

// NeedNodeSDK finds node and the pinned Azure IoT device SDK, skipping the
// test when either is missing or at another version, or failing it when
// CI=true.
func NeedNodeSDK(t testing.TB) NodeSDK {
	t.Helper()
	node := Need(t, "node")
	dir := os.Getenv("OUTPOST_NODE_CACHE")
	if dir == "" {
		dir = DefaultNodeCache
	}
	sdk := NodeSDK{Node: node, Modules: filepath.Join(dir, "node_modules")}
	for name, want := range NodeSDKPackages {
		if err := checkNodePackage(sdk.Modules, name, want); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("test peer %s@%s is missing under CI: %v (.ci/peers installs it)", name, want, err)
			}
			t.Skipf("test peer %s@%s not installed: %v (run .ci/peers as root, or set OUTPOST_NODE_CACHE)", name, want, err)
		}
	}
	return sdk
}

func checkNodePackage(modules, name, want string) error {
	b, err := os.ReadFile(filepath.Join(modules, name, "package.json"))
	if err != nil {
		return err
	}
	var p struct{ Version string }
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("%s/package.json: %w", name, err)
	}
	if p.Version != want {
		return fmt.Errorf("%s is at %s", name, p.Version)
	}
	return nil
}

// Command runs a Node.js script that requires the SDK (NODE_PATH points at
// it), with env added to the test's environment.
func (s NodeSDK) Command(script string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(s.Node, append([]string{script}, args...)...)
	cmd.Env = append(append(os.Environ(), "NODE_PATH="+s.Modules), env...)
	return cmd
}
