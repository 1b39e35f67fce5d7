package config

import "github.com/outpost-iot/outpost/cloudlink"

// cloud places the cloud link's own errors, and refuses the keys written
// for the other protocol (only the file knows which keys are written).
func (v *validator) cloud() {
	c := v.c.Cloud
	if !v.ok("cloud.protocol") {
		return // the protocol decides everything else
	}
	v.owned("cloud", c.Validate())
	switch c.Protocol {
	case cloudlink.ProtocolMQTT:
		v.notFor(azureOnly, cloudlink.ProtocolMQTT)
	case cloudlink.ProtocolAzure:
		v.notFor(mqttOnly, cloudlink.ProtocolAzure)
	}
}

func (v *validator) notFor(keys []string, proto cloudlink.Protocol) {
	for _, k := range keys {
		if v.c.where.has("cloud." + k) {
			v.errorf("cloud."+k, "cloud.%s is not used with protocol %s", k, proto)
		}
	}
}
