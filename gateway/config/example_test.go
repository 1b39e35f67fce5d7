package config_test

import (
	"fmt"

	"github.com/outpost-iot/outpost/gateway/config"
)

func ExampleParse() {
	cfg, err := config.Parse("outpost.yaml", []byte(`
gateway:
  data_dir: /var/lib/outpost
hub:
  lisen: 127.0.0.1:1883
store:
  ttl: 7d
`))
	fmt.Println(cfg == nil)
	fmt.Println(err)
	// Output:
	// true
	// outpost.yaml:2:1: gateway.id is required
	// outpost.yaml:5:3: unknown key "lisen" in hub (did you mean "listen"?)
	// outpost.yaml:7:8: store.ttl: bad duration "7d" (want a number with a unit: 500ms, 5s, 2m, 168h)
}

func ExampleConfig_Summary() {
	cfg, err := config.Parse("example.yaml", config.Example)
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.Summary())
	// Output:
	// gw-01: hub 127.0.0.1:1883 (1 client), http 127.0.0.1:9180, store 512MiB drop-oldest, cloud mqtts://broker.example:8883, 0 devices
}
