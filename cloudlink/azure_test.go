package cloudlink

import (
	"testing"
	"time"
)

// The vectors are IOTHUB.md's V1, V2 and V5 (V1's library appends an empty
// "&skn=", which IoT Hub does not need; it is omitted here).
func TestSASTokenVectors(t *testing.T) {
	for _, tc := range []struct {
		name, uri, key string
		expiry         int64
		want           string
	}{
		{"V1", "test.azure-devices.net/devices/test", "c2VjcmV0", 1483236061,
			"SharedAccessSignature sr=test.azure-devices.net%2Fdevices%2Ftest&sig=IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU%3D&se=1483236061"},
		{"V2", "uri", "cGFzc3dvcmQ=", 12345,
			"SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"},
		{"V5", "myiothub.azure-devices.net/devices/my_device", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", 1578941692,
			"SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D&se=1578941692"},
		{"V5-module", "myiothub.azure-devices.net/devices/my_device/modules/my_module", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", 1578941692,
			"SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module&sig=iAQRxkGTvQpFKsLRYZsj0xf8UcgKBbNZhWDb5pCSK9o%3D&se=1578941692"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SASToken(tc.uri, tc.key, time.Unix(tc.expiry, 0), "")
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	if tok, _ := SASToken("uri", "cGFzc3dvcmQ=", time.Unix(12345, 0), "device connect"); tok != "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345&skn=device%20connect" {
		t.Errorf("policy token %s", tok)
	}
	if _, err := SASToken("uri", "not base64!", time.Unix(1, 0), ""); err == nil {
		t.Error("a key that is not base64 was accepted")
	}
}

func TestAzureUsername(t *testing.T) {
	if got, want := AzureUsername("myhub.azure-devices.net", "gw-01"), "myhub.azure-devices.net/gw-01/?api-version=2021-04-12"; got != want {
		t.Errorf("username %q, want %q", got, want)
	}
}
