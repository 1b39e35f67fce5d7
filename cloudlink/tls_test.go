package cloudlink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// pki writes a CA, a server certificate for 127.0.0.1/localhost and a client
// certificate (CN gw-01) under dir, and returns their paths.
type pkiFiles struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func makePKI(t *testing.T, dir string) pkiFiles {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if server {
			tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	sDER, sKey := leaf(2, "localhost", x509.ExtKeyUsageServerAuth, true)
	cDER, cKey := leaf(3, "gw-01", x509.ExtKeyUsageClientAuth, false)
	return pkiFiles{
		ca:         write("ca.crt", "CERTIFICATE", caDER),
		serverCert: write("server.crt", "CERTIFICATE", sDER), serverKey: writeKey("server.key", sKey),
		clientCert: write("client.crt", "CERTIFICATE", cDER), clientKey: writeKey("client.key", cKey),
	}
}

// secureMosquitto starts Mosquitto with a password file on its plain
// listener, a TLS listener and an mTLS listener (client certificate
// required, its CN is the username).
func secureMosquitto(t *testing.T) (m *peertest.Mosquitto, pki pkiFiles, tlsAddr, mtlsAddr string) {
	t.Helper()
	passwd := peertest.Need(t, "mosquitto_passwd")
	dir := t.TempDir()
	pki = makePKI(t, dir)
	pw := filepath.Join(dir, "passwd")
	for i, up := range [][2]string{{"gwuser", "gw pass"}, {"cloudapp", "app-pass"}} {
		args := []string{"-b", pw, up[0], up[1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	tlsPort, mtlsPort := peertest.FreePort(t), peertest.FreePort(t)
	tlsAddr, mtlsAddr = "127.0.0.1:"+itoa(tlsPort), "127.0.0.1:"+itoa(mtlsPort)
	m = peertest.StartMosquitto(t,
		// Started as root, Mosquitto drops to its own user before it reads
		// keys and the password file (TESTPEERS.md); keep root for the test.
		"user root",
		"allow_anonymous false",
		"password_file "+pw,
		"listener "+itoa(tlsPort)+" 127.0.0.1",
		"cafile "+pki.ca, "certfile "+pki.serverCert, "keyfile "+pki.serverKey,
		"listener "+itoa(mtlsPort)+" 127.0.0.1",
		"cafile "+pki.ca, "certfile "+pki.serverCert, "keyfile "+pki.serverKey,
		"require_certificate true", "use_identity_as_username true",
	)
	return m, pki, tlsAddr, mtlsAddr
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestMosquittoSecure(t *testing.T) {
	m, pki, tlsAddr, mtlsAddr := secureMosquitto(t)
	for _, tc := range []struct {
		name    string
		opt     Options
		wantErr string // "" = must deliver
	}{
		{"password", Options{Config: Config{URL: "mqtt://" + m.Addr, Username: "gwuser"}, password: "gw pass"}, ""},
		{"wrong password", Options{Config: Config{URL: "mqtt://" + m.Addr, Username: "gwuser"}, password: "nope"}, "not Authorized"},
		{"tls with ca_file", Options{Config: Config{URL: "mqtts://" + tlsAddr, Username: "gwuser", TLS: TLSConfig{CAFile: pki.ca}}, password: "gw pass"}, ""},
		{"tls, system roots only", Options{Config: Config{URL: "mqtts://" + tlsAddr, Username: "gwuser"}, password: "gw pass"}, "certificate"},
		{"tls, server name set", Options{Config: Config{URL: "mqtts://" + tlsAddr, Username: "gwuser", TLS: TLSConfig{CAFile: pki.ca, ServerName: "localhost"}}, password: "gw pass"}, ""},
		{"tls, wrong server name", Options{Config: Config{URL: "mqtts://" + tlsAddr, Username: "gwuser", TLS: TLSConfig{CAFile: pki.ca, ServerName: "broker.example"}}, password: "gw pass"}, "certificate"},
		{"mtls", Options{Config: Config{URL: "mqtts://" + mtlsAddr, TLS: TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}}, ""},
		{"mtls without client cert", Options{Config: Config{URL: "mqtts://" + mtlsAddr, TLS: TLSConfig{CAFile: pki.ca}}}, "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := collect(t, "tcp://"+m.Addr, nil, "cloudapp", "app-pass")
			q := newMemQueue()
			want, payloads := fill(q, 50, "sec-"+strings.ReplaceAll(tc.name, " ", "-"))
			o := fastRetry(tc.opt)
			o.ClientID, o.Logger = "gw-"+strings.ReplaceAll(tc.name, " ", "-"), testLogger(t)
			s, err := New(o, q)
			if err != nil {
				t.Fatal(err)
			}
			stop := runSession(t, s)
			if tc.wantErr == "" {
				waitDrained(t, q, 10*time.Second)
				col.waitUnique(50, 10*time.Second)
				stop()
				col.verify(want, payloads, true)
				return
			}
			// Refused: it keeps trying (never gives up) and acks nothing.
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(s.Status().LastError, tc.wantErr) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			st := s.Status()
			stop()
			t.Logf("refused as expected: %s", st.LastError)
			if !strings.Contains(st.LastError, tc.wantErr) || st.Connected || st.Forwarded != 0 || q.Len() != 50 {
				t.Errorf("refused session: status %+v, queue %d (want error containing %q)", st, q.Len(), tc.wantErr)
			}
			if strings.Contains(st.LastError, o.password) && o.password != "" {
				t.Errorf("password in error: %s", st.LastError)
			}
		})
	}
}
