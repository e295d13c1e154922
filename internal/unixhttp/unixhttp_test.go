package unixhttp

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

// A request for any URL reaches the server on the socket.
func TestTransportDialsTheSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "on the socket "+r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	c := &http.Client{Transport: Transport(sock)}
	resp, err := c.Get("http://anything.invalid/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "on the socket /x" {
		t.Fatalf("body %q", body)
	}
}
