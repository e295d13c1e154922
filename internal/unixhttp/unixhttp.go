// Package unixhttp owns the one way grapevine speaks HTTP over a unix socket:
// to the plugin's own socket (the status client, the benchmarks) and to the
// Docker engine's (the names service).
package unixhttp

import (
	"context"
	"net"
	"net/http"
)

// Transport returns an HTTP transport whose every connection dials the unix
// socket at path, whatever host the request URL names.
func Transport(path string) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
}
