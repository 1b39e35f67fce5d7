package cloudlink

import "testing"

// PKIForTest writes a CA and a server certificate for 127.0.0.1 signed by
// it (for the external tests), and returns the files.
func PKIForTest(t *testing.T) (ca, cert, key string) {
	p := makePKI(t, t.TempDir())
	return p.ca, p.serverCert, p.serverKey
}
