package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

type pki struct {
	dir                 string
	caFile, caKey       string
	serverCrt, serverKy string
	pool                *x509.CertPool
	ca                  *x509.Certificate
	caPriv              *ecdsa.PrivateKey
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newPKI makes a CA and a server certificate for 127.0.0.1/localhost.
func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caPriv = key
	p.caFile = filepath.Join(p.dir, "ca.crt")
	writePEM(t, p.caFile, "CERTIFICATE", der)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.serverCrt, p.serverKy = p.issue(t, "localhost", true)
	return p
}

// issue signs a leaf certificate with CN cn and returns its files.
func (p *pki) issue(t *testing.T, cn string, server bool) (crt, key string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.caPriv)
	if err != nil {
		t.Fatal(err)
	}
	crt = filepath.Join(p.dir, cn+".crt")
	key = filepath.Join(p.dir, cn+".key")
	writePEM(t, crt, "CERTIFICATE", der)
	kd, _ := x509.MarshalECPrivateKey(k)
	writePEM(t, key, "EC PRIVATE KEY", kd)
	return crt, key
}

func startTLSHub(t *testing.T, st Appender) (*Hub, *pki) {
	p := newPKI(t)
	h := startHub(t, st, func(o *Options) {
		o.Listen = ""
		o.TLSListen = "127.0.0.1:0"
		o.TLS.CertFile, o.TLS.KeyFile, o.TLS.ClientCAFile = p.serverCrt, p.serverKy, p.caFile
	})
	return h, p
}

func tlsPaho(t *testing.T, h *Hub, p *pki, id, user, pass string, cert *tls.Certificate) error {
	cfg := &tls.Config{RootCAs: p.pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	o := paho.NewClientOptions().AddBroker("ssl://" + h.TLSAddr()).SetClientID(id).SetTLSConfig(cfg)
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	o.SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return tok.Error()
	}
	defer c.Disconnect(0)
	pt := c.Publish("devices/"+id+"/messages/events/", 1, false, "over tls")
	if !pt.WaitTimeout(10 * time.Second) {
		t.Fatal("publish timed out")
	}
	return pt.Error()
}

func TestTLSClientCertificate(t *testing.T) {
	st := &fakeStore{}
	h, p := startTLSHub(t, st)
	if h.Addr() != "" || h.TLSAddr() == "" {
		t.Fatalf("Addr %q TLSAddr %q", h.Addr(), h.TLSAddr())
	}
	crt, key := p.issue(t, "leaf-1", false)
	leaf1, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsPaho(t, h, p, "leaf-1", "", "", &leaf1); err != nil {
		t.Fatalf("certificate login: %v", err)
	}
	if err := tlsPaho(t, h, p, "leaf-2", "leaf-2", testPassword, nil); err != nil {
		t.Fatalf("password login over TLS: %v", err)
	}
	if err := tlsPaho(t, h, p, "leaf-2", "", "", &leaf1); err == nil {
		t.Fatal("leaf-1's certificate logged in as leaf-2")
	}
	// A certificate from another CA fails the handshake.
	other := newPKI(t)
	ocrt, okey := other.issue(t, "leaf-1", false)
	forged, _ := tls.LoadX509KeyPair(ocrt, okey)
	if err := tlsPaho(t, h, p, "leaf-1", "", "", &forged); err == nil {
		t.Fatal("a certificate from an unknown CA logged in")
	}
	if n := len(st.records()); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
	waitFor(t, "the TLS failure to be counted", func() bool { return h.Stats().TLSFailures >= 1 })
}

func TestTLSMosquittoPubClientCertificate(t *testing.T) {
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			st := &fakeStore{}
			h, p := startTLSHub(t, st)
			crt, key := p.issue(t, "leaf-1", false)
			args := append(hostPort(h.TLSAddr()), "-V", v, "-q", "1", "-i", "leaf-1", "--cafile", p.caFile, "--cert", crt, "--key", key,
				"-t", "devices/leaf-1/messages/events/", "-m", "cert")
			out, ok := mosqPub(t, args...)
			if !ok || !strings.Contains(out, "received PUBACK") {
				t.Fatalf("mosquitto_pub with a client certificate:\n%s", out)
			}
			// Without a certificate or password: refused.
			args = append(hostPort(h.TLSAddr()), "-V", v, "-q", "1", "-i", "leaf-1", "--cafile", p.caFile, "-t", "devices/leaf-1/messages/events/", "-m", "anon")
			if out, _ := mosqPub(t, args...); strings.Contains(out, "received PUBACK") {
				t.Fatalf("anonymous TLS client published:\n%s", out)
			}
			if n := len(st.records()); n != 1 {
				t.Fatalf("%d records", n)
			}
		})
	}
}
