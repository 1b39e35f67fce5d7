package iothub

import (
	"errors"
	"testing"
)

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Username
	}{
		{"myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.0.0",
			Username{Host: "myiothub.azure-devices.net", DeviceID: "my_device", APIVersion: "2020-09-30", ClientType: "azsdk-c/1.0.0"}},
		// The Node.js SDK, azure-iot-device-mqtt 1.16.4.
		{"hub.azure-devices.net/leaf-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian)",
			Username{Host: "hub.azure-devices.net", DeviceID: "leaf-1", APIVersion: "2021-04-12", ClientType: "azure-iot-device/1.18.4 (node v20.20.2; Debian)"}},
		{"127.0.0.1/leaf-1/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3BThermostat%3B1",
			Username{Host: "127.0.0.1", DeviceID: "leaf-1", APIVersion: "2021-04-12", ModelID: "dtmi:com:example;Thermostat;1"}},
		{"hub/leaf-1/api-version=2016-11-14", Username{Host: "hub", DeviceID: "leaf-1", APIVersion: "2016-11-14"}},
		{"hub/leaf-1/api-version=2016-11-14&DeviceClientType=x", Username{Host: "hub", DeviceID: "leaf-1", APIVersion: "2016-11-14", ClientType: "x"}},
		{"hub/leaf-1", Username{Host: "hub", DeviceID: "leaf-1"}},
		{"hub/leaf-1/", Username{Host: "hub", DeviceID: "leaf-1"}},
		{"hub/leaf-1?api-version=1", Username{Host: "hub", DeviceID: "leaf-1", APIVersion: "1"}},
		{"hub/edge-1/mod-a/?api-version=2018-06-30", Username{Host: "hub", DeviceID: "edge-1", ModuleID: "mod-a", APIVersion: "2018-06-30"}},
		{"hub/leaf-1/?api-version=1&unknown=2", Username{Host: "hub", DeviceID: "leaf-1", APIVersion: "1"}},
	} {
		got, err := ParseUsername(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q:\n got %+v %v\nwant %+v", tc.in, got, err, tc.want)
		}
		again, err := ParseUsername(got.String())
		if tc.want.APIVersion == "" {
			tc.want.APIVersion = DefaultAPIVersion
		}
		if err != nil || again != tc.want {
			t.Errorf("%q: String %q parses to %+v %v", tc.in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "leaf-1", "/leaf-1/?api-version=1", "hub//?api-version=1", "hub/le af/?api-version=1",
		"hub/leaf#1/?api-version=1", "hub/a/b/c/?api-version=1", "hub/leaf-1/?api-version=%zz", "ho st/leaf-1/"} {
		if u, err := ParseUsername(bad); !errors.Is(err, ErrUsername) {
			t.Errorf("%q: %+v %v, want ErrUsername", bad, u, err)
		}
	}
}
