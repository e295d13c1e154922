package names

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"grapevine/gossip/gossiptest"
)

// FuzzTapAnswer: whatever bytes a container sends to Docker's resolver, the
// tap's answer never panics, and it answers only a well-formed query for a
// name held on the container's network: a reply to that query (same ID and
// question), within 512 bytes unless the query's EDNS0 allows more.
func FuzzTapAnswer(f *testing.F) {
	n := gossiptest.NewNet()
	c := n.Node(f, "a", nil)
	subnet := netip.MustParsePrefix("198.19.7.0/24")
	addr := netip.MustParseAddr("198.19.7.5")
	if err := c.Put("endpoint", subnet.String()+"/"+addr.String(), []byte("{}")); err != nil {
		f.Fatal(err)
	}
	v, err := Encode(Entry{Endpoint: strings.Repeat("ab", 32), Names: []string{"db"}})
	if err != nil {
		f.Fatal(err)
	}
	if err := c.Put(Kind, Key(subnet, addr, "a"), v); err != nil {
		f.Fatal(err)
	}
	s := &Service{log: gossiptest.Log("a"), table: NewTable(c)}
	gossiptest.Eventually(f, 10*time.Second, "db in the table", func() bool { return len(s.table.Lookup(subnet, "db")) == 1 })
	for _, q := range []*dns.Msg{
		new(dns.Msg).SetQuestion("db.", dns.TypeA),
		new(dns.Msg).SetQuestion("DB.", dns.TypeAAAA),
		new(dns.Msg).SetQuestion("up.example.", dns.TypeA),
		new(dns.Msg).SetQuestion("db.", dns.TypeTXT),
	} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, query []byte) {
		out := s.answerIn(query, []netip.Prefix{subnet}, true)
		if out == nil {
			return
		}
		var q, r dns.Msg
		if err := q.Unpack(query); err != nil || len(q.Question) != 1 || q.Response {
			t.Fatalf("answered a query that is not one well-formed question (%v): %x", err, query)
		}
		if name := strings.TrimSuffix(strings.ToLower(q.Question[0].Name), "."); name != "db" {
			t.Fatalf("answered %q, which nobody holds", name)
		}
		if err := r.Unpack(out); err != nil || !r.Response || r.Id != q.Id || len(r.Question) != 1 || r.Question[0] != q.Question[0] {
			t.Fatalf("answer %+v (%v) does not reply to %+v", r, err, q)
		}
		limit := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil && int(o.UDPSize()) > limit {
			limit = int(o.UDPSize())
		}
		if len(out) > limit {
			t.Fatalf("answer of %d bytes over the client's %d", len(out), limit)
		}
	})
}
