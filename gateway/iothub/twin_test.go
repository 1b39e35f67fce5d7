package iothub

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func patchOf(t testing.TB, s string) Patch {
	t.Helper()
	p, err := ParsePatch([]byte(s))
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return p
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSectionApply(t *testing.T) {
	tw := NewTwin()
	s := &tw.Reported
	steps := []struct{ patch, want string }{
		{`{"fw":"1.0","net":{"ip":"10.0.0.2","rssi":-70}}`, `{"$version":2,"fw":"1.0","net":{"ip":"10.0.0.2","rssi":-70}}`},
		{`{"net":{"rssi":-60,"ssid":"x"}}`, `{"$version":3,"fw":"1.0","net":{"ip":"10.0.0.2","rssi":-60,"ssid":"x"}}`},
		{`{"net":{"ip":null},"fw":"1.1"}`, `{"$version":4,"fw":"1.1","net":{"rssi":-60,"ssid":"x"}}`},
		{`{"net":null,"list":[1,2,{"a":1}]}`, `{"$version":5,"fw":"1.1","list":[1,2,{"a":1}]}`},
		{`{"fw":{"v":1,"gone":null}}`, `{"$version":6,"fw":{"v":1},"list":[1,2,{"a":1}]}`},
		{`{"n":1.50}`, `{"$version":7,"fw":{"v":1},"list":[1,2,{"a":1}],"n":1.50}`},
		{`{}`, `{"$version":8,"fw":{"v":1},"list":[1,2,{"a":1}],"n":1.50}`},
	}
	for _, st := range steps {
		before := s.Props
		beforeJSON := jsonOf(t, before)
		if err := s.Apply(patchOf(t, st.patch)); err != nil {
			t.Fatalf("%s: %v", st.patch, err)
		}
		if got := s.String(); got != st.want {
			t.Errorf("after %s:\n got %s\nwant %s", st.patch, got, st.want)
		}
		if jsonOf(t, before) != beforeJSON {
			t.Errorf("%s changed the old properties map", st.patch)
		}
	}
	b, err := json.Marshal(tw)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseTwin(b)
	if err != nil || back.Reported.String() != tw.Reported.String() || back.Desired.Version != 1 {
		t.Errorf("round trip %s: %+v %v", b, back, err)
	}
}

func TestParseTwinGetBody(t *testing.T) {
	body := `{"desired":{"setpoint":21.5,"$version":4,"$metadata":{"$lastUpdated":"2026-01-01T00:00:00Z"}},"reported":{"$version":9}}`
	tw, err := ParseTwin([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if tw.Desired.Version != 4 || tw.Reported.Version != 9 || tw.Desired.String() != `{"$version":4,"setpoint":21.5}` {
		t.Errorf("%+v", tw)
	}
	if _, err := ParseTwin([]byte(`{"desired":`)); StatusOf(err) != StatusBadRequest {
		t.Errorf("malformed: %v", err)
	}
}

func TestPatchRules(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 10) + "1" + strings.Repeat("}", 10)
	tooDeep := strings.Repeat(`{"a":`, 11) + "1" + strings.Repeat("}", 11)
	for _, tc := range []struct {
		body   string
		status int
	}{
		{`{"ok":1}`, 0},
		{deep, 0},
		{`{"a":[[1,2],[3]]}`, 0},
		{`{"big":4503599627370495,"small":-4503599627370496,"f":1e300}`, 0},
		{`{"s":"` + strings.Repeat("x", 4096) + `"}`, 0},
		{``, 400},
		{`{"a":1`, 400},
		{`[1,2]`, 400},
		{`"x"`, 400},
		{`null`, 400},
		{`{"a":1} {"b":2}`, 400},
		{tooDeep, 400},
		{`{"a.b":1}`, 400},
		{`{"$a":1}`, 400},
		{`{"$version":3}`, 400},
		{`{"a#":1}`, 400},
		{`{"a b":1}`, 400},
		{`{"":1}`, 400},
		{`{"` + strings.Repeat("n", 1025) + `":1}`, 400},
		{`{"s":"` + strings.Repeat("x", 4097) + `"}`, 400},
		{`{"i":4503599627370496}`, 400},
		{`{"i":-4503599627370497}`, 400},
		{`{"f":1e999}`, 400},
		{`{"a":[1,null]}`, 400},
		{`{"a":[{"b":null}]}`, 400},
	} {
		_, err := ParsePatch([]byte(tc.body))
		if got := StatusOf(err); tc.status == 0 && err != nil || tc.status != 0 && got != tc.status {
			t.Errorf("%.60s: %v (status %d), want %d", tc.body, err, got, tc.status)
		}
	}
}

func TestSectionSizeLimit(t *testing.T) {
	// IoT Hub's count: name + value; a string its bytes, a number 8, a bool 4.
	if n := SectionSize(patchOf(t, `{"ab":"xyz","n":1,"b":true,"o":{"k":"v"},"l":[1,"ab"]}`)); n != 2+3+1+8+1+4+1+(1+1)+1+(8+2) {
		t.Errorf("size %d", n)
	}
	var s Section
	v := strings.Repeat("x", 4000)
	for i := range 8 {
		if err := s.Apply(patchOf(t, fmt.Sprintf(`{"p%d":%q}`, i, v))); err != nil {
			t.Fatalf("patch %d: %v", i, err)
		}
	}
	before, version := s.String(), s.Version
	err := s.Apply(patchOf(t, `{"p8":"`+v+`"}`))
	if StatusOf(err) != StatusTooLarge {
		t.Errorf("over 32 KB: %v", err)
	}
	if s.String() != before || s.Version != version {
		t.Error("a refused patch changed the section")
	}
	// A patch that shrinks the section is fine even near the limit.
	if err := s.Apply(patchOf(t, `{"p0":null,"p8":"`+v+`"}`)); err != nil {
		t.Errorf("replace: %v", err)
	}
}

func TestDesiredPatch(t *testing.T) {
	p, v, err := ParseDesiredPatch([]byte(`{"setpoint":21.5,"$version":7}`))
	if err != nil || v != 7 || jsonOf(t, p) != `{"setpoint":21.5}` {
		t.Errorf("%v %d %v", p, v, err)
	}
	for _, bad := range []string{`{"setpoint":1}`, `{"$version":"7"}`, `{"$version":-1}`, `{"$version":1.5}`} {
		if _, _, err := ParseDesiredPatch([]byte(bad)); StatusOf(err) != StatusBadRequest {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestPendingMerges(t *testing.T) {
	var q Pending
	q.Add(patchOf(t, `{"a":1,"o":{"x":1,"y":2}}`))
	q.Add(patchOf(t, `{"a":2,"o":{"y":null,"z":3},"gone":null}`))
	q.Add(patchOf(t, `{"b":true}`))
	if q.Len() != 1 || jsonOf(t, q.Patches()[0]) != `{"a":2,"b":true,"gone":null,"o":{"x":1,"y":null,"z":3}}` {
		t.Errorf("%d %s", q.Len(), jsonOf(t, q.Patches()))
	}
	// An object where a value was: its own patch, after the others.
	q.Add(patchOf(t, `{"a":{"deep":1}}`))
	q.Add(patchOf(t, `{"a":{"more":2},"c":3}`))
	if q.Len() != 2 || jsonOf(t, q.Patches()[1]) != `{"a":{"deep":1,"more":2},"c":3}` {
		t.Errorf("%d %s", q.Len(), jsonOf(t, q.Patches()))
	}
	q.Done(1)
	if q.Len() != 1 || jsonOf(t, q.Patches()[0]) != `{"a":{"deep":1,"more":2},"c":3}` {
		t.Errorf("after Done: %s", jsonOf(t, q.Patches()))
	}
	q.Done(5)
	if q.Len() != 0 {
		t.Error("Done(5) left patches")
	}
}

// Sending the pending patches has the same effect as sending each patch in
// turn, on any starting section.
func TestPendingEquivalence(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		var q Pending
		var all []Patch
		for range 1 + r.IntN(5) {
			p := randPatch(r, 3)
			all = append(all, p)
			q.Add(p)
		}
		checkPending(t, randPatch(r, 3), all, q.Patches())
	}
}

func checkPending(t testing.TB, start Patch, all, pending []Patch) {
	t.Helper()
	init := Merge(nil, start)
	want, got := init, init
	for _, p := range all {
		want = Merge(want, p)
	}
	for _, p := range pending {
		got = Merge(got, p)
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("start %s, patches %s, pending %s:\n got %s\nwant %s", jsonOf(t, init), jsonOf(t, all), jsonOf(t, pending), jsonOf(t, got), jsonOf(t, want))
	}
}

func randPatch(r *rand.Rand, depth int) Patch {
	p := Patch{}
	for range r.IntN(4) {
		k := string(rune('a' + r.IntN(3)))
		switch n := r.IntN(5); {
		case n == 0:
			p[k] = nil
		case n == 1 && depth > 0:
			p[k] = map[string]any(randPatch(r, depth-1))
		case n == 2:
			p[k] = json.Number(fmt.Sprint(r.IntN(3)))
		case n == 3:
			p[k] = []any{json.Number("1")}
		default:
			p[k] = "s"
		}
	}
	return p
}

func TestMethodCall(t *testing.T) {
	c, err := ParseMethodCall(nil)
	if err != nil || c.ResponseTimeout != DefaultMethodTimeout || c.ConnectTimeout != 0 || c.Payload != nil {
		t.Errorf("empty: %+v %v", c, err)
	}
	c, err = ParseMethodCall([]byte(`{"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":300}`))
	if err != nil || c.Name != "reboot" || string(c.Payload) != `{"delay":5}` || c.ResponseTimeout != 5*time.Second || c.ConnectTimeout != 300*time.Second {
		t.Errorf("%+v %v", c, err)
	}
	c, err = ParseMethodCall([]byte(`{"payload":null,"responseTimeoutInSeconds":300}`))
	if err != nil || c.Payload != nil || c.ResponseTimeout != MaxMethodTimeout {
		t.Errorf("%+v %v", c, err)
	}
	for _, bad := range []string{`{"responseTimeoutInSeconds":4}`, `{"responseTimeoutInSeconds":301}`, `{"responseTimeoutInSeconds":5.5}`,
		`{"responseTimeoutInSeconds":"30"}`, `{"connectTimeoutInSeconds":-1}`, `{"connectTimeoutInSeconds":301}`, `{"methodName":"a/b"}`, `{`, `[]`, `{} {}`} {
		if _, err := ParseMethodCall([]byte(bad)); StatusOf(err) != StatusBadRequest {
			t.Errorf("%s: %v", bad, err)
		}
	}
	big := `{"payload":"` + strings.Repeat("x", MaxMethodPayloadBytes) + `"}`
	if _, err := ParseMethodCall([]byte(big)); StatusOf(err) != StatusTooLarge {
		t.Errorf("big payload: %v", err)
	}
	for n, want := range map[int]time.Duration{0: 30 * time.Second, 5: 5 * time.Second, 300: 300 * time.Second} {
		if d, err := MethodTimeout(n); err != nil || d != want {
			t.Errorf("MethodTimeout(%d) = %v %v", n, d, err)
		}
	}
	for _, n := range []int{-1, 4, 301} {
		if _, err := MethodTimeout(n); StatusOf(err) != StatusBadRequest {
			t.Errorf("MethodTimeout(%d): %v", n, err)
		}
	}
}

func TestMethodResult(t *testing.T) {
	for _, tc := range []struct {
		r    MethodResult
		want string
	}{
		{MethodResult{Status: 200, Payload: json.RawMessage(`{"ok":true}`)}, `{"status":200,"payload":{"ok":true}}`},
		{MethodResult{Status: 404}, `{"status":404,"payload":null}`},
		{MethodResult{Status: 500, Payload: json.RawMessage(`not json`)}, `{"status":500,"payload":"not json"}`},
	} {
		if got := jsonOf(t, tc.r); got != tc.want {
			t.Errorf("%s, want %s", got, tc.want)
		}
	}
}

func TestStatusOf(t *testing.T) {
	if StatusOf(nil) != 200 || StatusOf(fmt.Errorf("x: %w", errorf(413, "big"))) != 413 || StatusOf(fmt.Errorf("plain")) != 500 {
		t.Error("StatusOf")
	}
}
