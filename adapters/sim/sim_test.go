package sim

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/adaptertest"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestConformance(t *testing.T) {
	adaptertest.Run(t, adaptertest.Case{
		Kind:           "sim",
		Device:         "meter-1",
		Config:         &Config{Interval: 20 * time.Millisecond},
		UnknownCommand: &msg.Command{ID: "c1", Device: "meter-1", Write: map[string]any{"nope": 1.0}},
		Optional:       adaptertest.Optional{PointLister: true},
	})
}

func TestValidate(t *testing.T) {
	err := (&Config{Interval: time.Millisecond, FailEvery: -1}).Validate()
	var fe *adapters.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Validate = %v, want FieldErrors", err)
	}
	for _, want := range []string{"interval: must be at least 10ms, got 1ms", "fail_every: must not be negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %q, missing %q", err, want)
		}
	}
}

func TestWriteSetpointAndErrors(t *testing.T) {
	m := New("m", Config{Interval: 10 * time.Millisecond, Setpoint: 20, FailEvery: 2})
	res, err := m.Apply(context.Background(), msg.Command{Write: map[string]any{"setpoint": 21.5}})
	if err != nil || res.Status != msg.StatusDone || res.Values["setpoint"] != 21.5 {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if _, err := m.Apply(context.Background(), msg.Command{Write: map[string]any{"setpoint": "hot"}}); !errors.Is(err, adapters.ErrRejected) {
		t.Fatalf("Apply(string) = %v, want ErrRejected", err)
	}
	r1, r2 := m.poll(time.Now()), m.poll(time.Now())
	if r1.Values["setpoint"] != 21.5 || r1.Values["current"] == nil || r1.Errors != nil {
		t.Errorf("first poll = %+v", r1)
	}
	if r2.Errors["current"] == "" || r2.Values["current"] != nil {
		t.Errorf("second poll should fail current: %+v", r2)
	}
}

func TestSensorMode(t *testing.T) {
	m := New("s", Config{Mode: "sensor", Interval: 10 * time.Millisecond})
	r := m.poll(time.Now())
	if _, ok := r.Values["temperature"]; !ok || len(r.Values) != 2 {
		t.Errorf("sensor reading = %+v", r)
	}
	if _, err := m.Apply(context.Background(), msg.Command{Write: map[string]any{"setpoint": 1.0}}); !errors.Is(err, adapters.ErrRejected) {
		t.Errorf("sensor Apply = %v, want ErrRejected", err)
	}
	if err := (&Config{Mode: "pump", Interval: time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("Validate(mode pump) = %v", err)
	}
}
