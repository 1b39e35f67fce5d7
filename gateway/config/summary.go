package config

import (
	"fmt"
	"strings"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Summary describes c in one line for `outpost check`, e.g.
//
//	gw-01: hub 127.0.0.1:1883 (2 clients), http 127.0.0.1:9180, store 512MiB drop-oldest, cloud mqtts://broker.example:8883, 3 devices (modbus 1, serial 1, gpio 1)
//
// It never prints a secret: no password, key or key file contents, and
// URLs lose any user info and query.
func (c *Config) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: hub ", c.Gateway.ID)
	var ls []string
	if c.Hub.Listen != "" {
		ls = append(ls, c.Hub.Listen)
	}
	if c.Hub.TLSListen != "" {
		ls = append(ls, c.Hub.TLSListen+" (tls)")
	}
	if len(ls) == 0 {
		ls = append(ls, "no listener")
	}
	b.WriteString(strings.Join(ls, " + "))
	fmt.Fprintf(&b, " (%s)", plural(len(c.Hub.Clients), "client"))
	if c.HTTP.Listen != "" {
		fmt.Fprintf(&b, ", http %s", c.HTTP.Listen)
	} else {
		b.WriteString(", http off")
	}
	fmt.Fprintf(&b, ", store %v %s", c.Store.MaxBytes, c.Store.WhenFull)
	switch cl := c.Cloud; cl.Protocol {
	case cloudlink.ProtocolMQTT:
		fmt.Fprintf(&b, ", cloud %s", cloudlink.RedactURL(cl.URL))
	case cloudlink.ProtocolAzure:
		fmt.Fprintf(&b, ", cloud azure-iothub %s as %s (%s identity)", cl.Host, cl.DeviceID, cl.Identity)
	default:
		b.WriteString(", cloud none (buffer only)")
	}
	fmt.Fprintf(&b, ", %s", plural(len(c.Devices), "device"))
	if len(c.Devices) > 0 {
		var kinds []string
		n := map[string]int{}
		for _, d := range c.Devices {
			if n[d.Kind] == 0 {
				kinds = append(kinds, d.Kind)
			}
			n[d.Kind]++
		}
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s %d", k, n[k])
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if hi := c.countPriority(msg.High); hi > 0 {
		fmt.Fprintf(&b, ", %d high priority", hi)
	}
	return b.String()
}

func (c *Config) countPriority(p msg.Priority) int {
	n := 0
	for _, d := range c.Devices {
		if d.Priority == p {
			n++
		}
	}
	for _, cl := range c.Hub.Clients {
		if cl.Priority == p {
			n++
		}
	}
	return n
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
