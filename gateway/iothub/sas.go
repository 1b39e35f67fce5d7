package iothub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// SAS token errors; Verify's errors wrap exactly one of them.
var (
	ErrTokenFormat    = errors.New("iothub: bad SAS token")
	ErrTokenResource  = errors.New("iothub: SAS token for another resource")
	ErrTokenSignature = errors.New("iothub: SAS token signature does not match")
	ErrTokenExpired   = errors.New("iothub: SAS token expired")
)

const sasPrefix = "SharedAccessSignature "

// SAS is a parsed shared access signature:
// "SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={key name}]".
type SAS struct {
	// Resource is the URL-decoded resource URI, e.g.
	// "myhub.azure-devices.net/devices/leaf-1".
	Resource string
	// Signature is the URL-decoded base64 HMAC-SHA256.
	Signature string
	// Expiry is se, whole seconds since the Unix epoch.
	Expiry time.Time
	// KeyName is skn, the shared access policy; "" for a device key.
	KeyName string

	// signed is the string the signature covers: sr and se as written.
	signed string
}

// ParseSAS parses a SAS token. Its fields may come in any order, each once;
// sr, sig and se are required; each value is percent-decoded (a "+" stays a
// "+"). An empty skn (one library writes "&skn=") counts as absent.
func ParseSAS(token string) (SAS, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), sasPrefix)
	if !ok {
		return SAS{}, fmt.Errorf("%w: does not start with %q", ErrTokenFormat, strings.TrimSpace(sasPrefix))
	}
	var s SAS
	var rawSR, rawSE string
	seen := map[string]bool{}
	for field := range strings.SplitSeq(rest, "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return SAS{}, fmt.Errorf("%w: field %.20q has no '='", ErrTokenFormat, field)
		}
		if seen[k] {
			return SAS{}, fmt.Errorf("%w: field %q twice", ErrTokenFormat, k)
		}
		seen[k] = true
		dv, err := url.PathUnescape(v)
		if err != nil {
			return SAS{}, fmt.Errorf("%w: field %q: bad percent-encoding", ErrTokenFormat, k)
		}
		switch k {
		case "sr":
			rawSR, s.Resource = v, dv
		case "sig":
			s.Signature = dv
		case "se":
			rawSE = v
			n, err := strconv.ParseInt(dv, 10, 64)
			if err != nil || n < 0 || dv[0] == '+' {
				return SAS{}, fmt.Errorf("%w: se %.20q is not seconds since 1970", ErrTokenFormat, dv)
			}
			s.Expiry = time.Unix(n, 0)
		case "skn":
			s.KeyName = dv
		default:
			return SAS{}, fmt.Errorf("%w: unknown field %.20q", ErrTokenFormat, k)
		}
	}
	switch {
	case !seen["sr"] || s.Resource == "":
		return SAS{}, fmt.Errorf("%w: no sr", ErrTokenFormat)
	case !seen["sig"] || s.Signature == "":
		return SAS{}, fmt.Errorf("%w: no sig", ErrTokenFormat)
	case !seen["se"]:
		return SAS{}, fmt.Errorf("%w: no se", ErrTokenFormat)
	}
	if b, err := base64.StdEncoding.DecodeString(s.Signature); err != nil || len(b) != sha256.Size {
		return SAS{}, fmt.Errorf("%w: sig is not a base64 HMAC-SHA256", ErrTokenFormat)
	}
	s.signed = rawSR + "\n" + rawSE
	return s, nil
}

// Verify checks token as IoT Hub does for a device: its signature with key
// (the device key, base64-decoded), its resource against wantResource, and
// that it has not expired at now. It returns the token's expiry; the
// connection it opened must end then.
//
// wantResource is "{host}/devices/{id}"; with an empty host
// ("/devices/{id}") any host matches, since a leaf of a gateway may name
// its IoT Hub or the gateway. The resource is compared without case, as
// IoT Hub compares a token's audience, and a trailing "/" is ignored.
//
// The signature is checked over sr and se exactly as the token carries
// them, so an SDK's choice of upper- or lower-case hex does not matter. It
// is compared in constant time.
func Verify(token string, key []byte, wantResource string, now time.Time) (time.Time, error) {
	s, err := ParseSAS(token)
	if err != nil {
		return time.Time{}, err
	}
	if !resourceMatches(s.Resource, wantResource) {
		return time.Time{}, fmt.Errorf("%w: sr %q, want %q", ErrTokenResource, s.Resource, wantResource)
	}
	want := sign(key, s.signed)
	got, _ := base64.StdEncoding.DecodeString(s.Signature) // checked by ParseSAS
	if len(key) == 0 || !hmac.Equal(got, want) {
		return time.Time{}, ErrTokenSignature
	}
	if !now.Before(s.Expiry) {
		return time.Time{}, fmt.Errorf("%w at %s", ErrTokenExpired, s.Expiry.UTC().Format(time.RFC3339))
	}
	return s.Expiry, nil
}

func resourceMatches(got, want string) bool {
	got, want = strings.TrimSuffix(got, "/"), strings.TrimSuffix(want, "/")
	if strings.HasPrefix(want, "/") {
		i := strings.IndexByte(got, '/')
		if i <= 0 {
			return false
		}
		got = got[i:]
	}
	return strings.EqualFold(got, want)
}

// DeviceResource is the resource URI of a device's tokens,
// "{host}/devices/{id}".
func DeviceResource(host, deviceID string) string { return host + "/devices/" + deviceID }

// Sign returns a SAS token for resource signed with key (base64-decoded)
// and valid until expiry, written as the SDKs write it: sr, sig, se, then
// skn when keyName (a shared access policy) is not "". Values are
// percent-encoded with upper-case hex and no safe characters.
func Sign(resource string, key []byte, expiry time.Time, keyName string) string {
	sr := msg.Escape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(sign(key, sr+"\n"+se))
	tok := sasPrefix + "sr=" + sr + "&sig=" + msg.Escape(sig) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + msg.Escape(keyName)
	}
	return tok
}

func sign(key []byte, s string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(s))
	return mac.Sum(nil)
}

// DecodeKey decodes a base64 device or policy key, as the config file and
// connection strings carry it.
func DecodeKey(key string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil {
		return nil, fmt.Errorf("iothub: key is not base64: %w", err)
	}
	if len(k) == 0 {
		return nil, errors.New("iothub: empty key")
	}
	return k, nil
}
