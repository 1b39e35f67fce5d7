package hub

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/iothub"
)

// errTokenExpired ends a connection whose SAS token has expired.
var errTokenExpired = errors.New("hub: sas token expired")

// sasLogins lets leaves log in as Azure IoT SDK devices do: username
// "{host}/{id}/?api-version=...", password a SAS token for
// "{host}/devices/{id}" signed with the leaf's own key (any host, since a
// leaf of a gateway names its IoT Hub or the gateway). It verifies tokens
// locally, so logins work offline, and closes each such connection when its
// token expires, as IoT Hub does; the SDKs then reconnect with a fresh one.
type sasLogins struct {
	keys map[string][]byte // device id -> decoded key
	log  *slog.Logger

	mu     sync.Mutex
	timers map[*mqtt.Client]*time.Timer
}

// newSASLogins decodes the keys of the clients that have one (reading
// SASKeyFile where given).
func newSASLogins(clients []Client, log *slog.Logger) (*sasLogins, error) {
	s := &sasLogins{keys: map[string][]byte{}, log: log, timers: map[*mqtt.Client]*time.Timer{}}
	var errs []error
	for i, c := range clients {
		k, err := c.sasKey()
		if err != nil {
			errs = append(errs, fmt.Errorf("hub: clients[%d] %q: %w", i, c.ID, err))
			continue
		}
		if k != nil {
			s.keys[c.ID] = k
		}
	}
	return s, errors.Join(errs...)
}

// sasKey returns the client's decoded IoT Hub key, nil when it has none.
func (c Client) sasKey() ([]byte, error) {
	key := c.SASKey
	switch {
	case c.SASKey != "" && c.SASKeyFile != "":
		return nil, errors.New("azure: set shared_access_key or shared_access_key_file, not both")
	case c.SASKeyFile != "":
		b, err := os.ReadFile(c.SASKeyFile)
		if err != nil {
			return nil, fmt.Errorf("azure.shared_access_key_file: %w", err)
		}
		key = string(b)
	case key == "":
		return nil, nil
	}
	k, err := iothub.DecodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("azure.shared_access_key: %w", err)
	}
	return k, nil
}

// azureUser reports whether user is an IoT Hub MQTT username for device id
// (any host, no module).
func azureUser(id, user string) bool {
	u, err := iothub.ParseUsername(user)
	return err == nil && u.DeviceID == id && u.ModuleID == ""
}

// has reports whether device id may log in with a SAS token.
func (s *sasLogins) has(id string) bool { _, ok := s.keys[id]; return ok }

// login verifies token for device id and, when it passes, arranges for cl
// to be closed at the token's expiry.
func (s *sasLogins) login(cl *mqtt.Client, id string, token []byte) bool {
	exp, err := iothub.Verify(string(token), s.keys[id], "/devices/"+id, time.Now())
	if err != nil {
		s.log.Debug("hub: sas login refused", "client", id, "remote", cl.Net.Remote, "err", err)
		return false
	}
	t := time.AfterFunc(time.Until(exp), func() { s.expire(cl, id) })
	s.mu.Lock()
	if old := s.timers[cl]; old != nil {
		old.Stop()
	}
	s.timers[cl] = t
	s.mu.Unlock()
	return true
}

// expire closes cl, whose token has expired: an MQTT 5 client first gets a
// DISCONNECT with reason 0x87 (not authorized); MQTT 3.1.1 has no server
// DISCONNECT, so the connection is just closed, as IoT Hub does.
func (s *sasLogins) expire(cl *mqtt.Client, id string) {
	s.mu.Lock()
	delete(s.timers, cl)
	s.mu.Unlock()
	if cl.Closed() {
		return
	}
	s.log.Info("hub: sas token expired; closing the connection", "client", id, "remote", cl.Net.Remote)
	if cl.Properties.ProtocolVersion == 5 {
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
			ReasonCode:  packets.ErrNotAuthorized.Code,
		})
	}
	cl.Stop(errTokenExpired)
}

// forget drops cl's expiry timer; it is called when cl disconnects.
func (s *sasLogins) forget(cl *mqtt.Client) {
	s.mu.Lock()
	if t := s.timers[cl]; t != nil {
		t.Stop()
		delete(s.timers, cl)
	}
	s.mu.Unlock()
}

// pending is the number of connections with a live expiry timer.
func (s *sasLogins) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.timers)
}
