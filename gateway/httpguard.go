package gateway

import (
	"bytes"
	"crypto/subtle"

	"fmt"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/gateway/config"
)

// Limits of the HTTP server: a request must arrive whole within
// httpReadTimeout (a body trickled at 1 byte/s is cut), and a mutating
// call's body may not exceed httpMaxBody.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 60 * time.Second
	httpMaxHeaderBytes    = 64 << 10
	httpMaxBody           = 1 << 20
	minTokenLen           = 16
)

// readToken reads http.token_file: one line of at least minTokenLen
// characters. No file configured is a nil token.
func readToken(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: http.token_file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < minTokenLen || bytes.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("gateway: http.token_file %s: want one line of at least %d characters without spaces", path, minTokenLen)
	}
	return tok, nil
}

// httpGuard wraps every route of the HTTP API:
//   - a request with an Origin header other than the listener's own (a
//     web page elsewhere) is refused, 403;
//   - a call that is not GET or HEAD needs "Authorization: Bearer
//     <token>" (401), and is refused (403) when no http.token_file is
//     configured; its body must be JSON (415) of at most httpMaxBody;
//   - on a listener that is not on a loopback address every call but
//     /healthz needs the token.
func httpGuard(next http.Handler, token []byte, listen string) http.Handler {
	open := !config.IsLoopback(listen)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			http.Error(w, "cross-origin requests are refused", http.StatusForbidden)
			return
		}
		mutating := r.Method != http.MethodGet && r.Method != http.MethodHead
		if mutating || (open && r.URL.Path != "/healthz") {
			if token == nil {
				http.Error(w, "this call needs a bearer token: set http.token_file", http.StatusForbidden)
				return
			}
			if !validBearer(r.Header.Get("Authorization"), token) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
				http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
				return
			}
		}
		if mutating {
			if !isJSON(r.Header.Get("Content-Type")) {
				http.Error(w, "the body must be application/json", http.StatusUnsupportedMediaType)
				return
			}
			if r.ContentLength > httpMaxBody {
				http.Error(w, fmt.Sprintf("body larger than %d bytes", httpMaxBody), http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, httpMaxBody)
		}
		next.ServeHTTP(w, r)
	})
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}

func validBearer(h string, token []byte) bool {
	got, ok := strings.CutPrefix(h, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), token) == 1
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// newHTTPServer is the API's server with the guard and the timeouts.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
	}
}
