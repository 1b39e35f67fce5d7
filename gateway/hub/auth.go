package hub

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"runtime"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// bcryptSlots bounds concurrent bcrypt comparisons so that a reconnect storm
// with wrong passwords cannot take every core.
var bcryptSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))

func checkHash(hash string) error {
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return fmt.Errorf("password_hash is not a bcrypt hash: %w", err)
	}
	return nil
}

// authenticate decides a CONNECT. The client id must be a configured device
// id; the login is a verified TLS client certificate with CN = id (username
// then empty, = id, or an IoT Hub username for id), an IoT Hub username for
// id with a SAS token signed with the client's key, or username = id with
// the right password.
func (h *Hub) authenticate(cl *mqtt.Client, pk packets.Packet) bool {
	id := pk.Connect.ClientIdentifier
	c, ok := h.clients[id]
	if !ok || msg.ValidDeviceID(id) != nil {
		return false
	}
	user := string(pk.Connect.Username)
	if tc, ok := unwrapConn(cl.Net.Conn).(*tls.Conn); ok {
		st := tc.ConnectionState()
		if len(st.VerifiedChains) > 0 && st.PeerCertificates[0].Subject.CommonName == id {
			return user == "" || user == id || azureUser(id, user)
		}
	}
	if user != id && h.sas.has(id) && azureUser(id, user) {
		return pk.Connect.PasswordFlag && h.sas.login(cl, id, pk.Connect.Password)
	}
	if user != id || c.PasswordHash == "" || !pk.Connect.PasswordFlag {
		return false
	}
	return c.checkPassword(pk.Connect.Password)
}

// checkPassword compares pw with the bcrypt hash. A password that passed
// once is remembered as a SHA-256 digest, so a reconnecting leaf does not
// pay bcrypt's cost again (only the matching password is remembered).
func (c *clientConf) checkPassword(pw []byte) bool {
	d := sha256.Sum256(pw)
	c.mu.Lock()
	if c.okSet && subtle.ConstantTimeCompare(d[:], c.okDigest[:]) == 1 {
		c.mu.Unlock()
		return true
	}
	c.mu.Unlock()
	bcryptSlots <- struct{}{}
	err := bcrypt.CompareHashAndPassword([]byte(c.PasswordHash), pw)
	<-bcryptSlots
	if err != nil {
		return false
	}
	c.mu.Lock()
	c.okDigest, c.okSet = d, true
	c.mu.Unlock()
	return true
}

// allowed is the ACL: topic is a topic (write, or read at delivery) or a
// filter (read at subscribe).
func (h *Hub) allowed(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id := cl.ID
	c, ok := h.clients[id]
	if !ok {
		return false
	}
	if h.iothubAllowed(topic, write) {
		return true
	}
	if write {
		if c.Operator && h.opt.Commands != nil {
			if _, _, err := msg.ParseDeviceboundTopic(topic); err == nil {
				return true
			}
		}
		return ownEvents(id, topic)
	}
	if ownDevicebound(id, topic) {
		return true
	}
	return c.ReadAll && eventsOnlyFilter(topic)
}

// ownEvents reports whether topic is devices/{id}/messages/events with an
// optional single-level property bag; the bag itself is parsed at ingest.
func ownEvents(id, topic string) bool {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, id)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, "/messages/events")
	if !ok {
		return false
	}
	return rest == "" || rest[0] == '/' && !strings.Contains(rest[1:], "/")
}

// ownDevicebound reports whether f (a filter or topic) lies within
// devices/{id}/messages/devicebound/#.
func ownDevicebound(id, f string) bool {
	prefix := "devices/" + id + "/messages/devicebound"
	rest, ok := strings.CutPrefix(f, prefix)
	if !ok {
		return false
	}
	return rest == "" || rest == "/#" || strings.HasPrefix(rest, "/")
}

// eventsOnlyFilter reports whether every topic f can match is a D2C topic:
// devices/{x}/messages/events[/...], where x may be "+".
func eventsOnlyFilter(f string) bool {
	parts := strings.Split(f, "/")
	if len(parts) < 4 || parts[0] != "devices" || parts[2] != "messages" || parts[3] != "events" {
		return false
	}
	if parts[1] == "#" || parts[1] == "" {
		return false
	}
	return parts[1] == "+" || msg.ValidDeviceID(parts[1]) == nil
}
