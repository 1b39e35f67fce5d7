package hubtest

import (
	"strings"
	"testing"
	"time"
)

// The hub's SAS check against IOTHUB.md's vector V5 (computed independently
// of any code here), so the stand-in does not merely agree with our signer.
func TestCheckSASVectorV5(t *testing.T) {
	const (
		key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
		tok = "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D&se=1578941692"
	)
	before := func() time.Time { return time.Unix(1578941000, 0) }
	h := &Hub{opt: Options{Host: "myiothub.azure-devices.net", Devices: map[string]string{"my_device": key, "other": key}, Now: before}}
	exp, err := h.checkSAS("my_device", tok)
	if err != nil || exp.Unix() != 1578941692 {
		t.Fatalf("V5 refused: %v (exp %v)", err, exp)
	}
	for _, tc := range []struct {
		name, device, tok, want string
		now                     int64
	}{
		{"expired", "my_device", tok, "expired", 1578941692},
		{"other device", "other", tok, "want myiothub.azure-devices.net/devices/other", 1578941000},
		{"changed expiry", "my_device", strings.Replace(tok, "se=1578941692", "se=1578941693", 1), "does not match", 1578941000},
		{"not SAS", "my_device", "secret", "not a SharedAccessSignature", 1578941000},
		{"unknown policy", "my_device", tok + "&skn=iothubowner", "no such policy", 1578941000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.opt.Now = func() time.Time { return time.Unix(tc.now, 0) }
			if _, err := h.checkSAS(tc.device, tc.tok); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
