package plugin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"grapevine/driver"
	"grapevine/gossip"
)

// Each probed path becomes the checks that name its cause and fix.
func TestPathCheckNamesCauseAndFix(t *testing.T) {
	local, vtep := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	cases := []struct {
		name string
		pc   driver.PathCheck
		want []string // check:result:words
	}{
		{"healthy", driver.PathCheck{Node: "h2", VTEP: vtep, Reached: true, RTT: time.Millisecond, Size: 1450, Carries: 1450},
			[]string{"vxlan-path:pass:answered", "mtu:pass:carries the networks' 1450 bytes"}},
		{"blocked", driver.PathCheck{Node: "h2", VTEP: vtep, Size: 1450},
			[]string{"vxlan-path:fail:VXLAN UDP port blocked between this host and h2"}},
		{"mtu", driver.PathCheck{Node: "h2", VTEP: vtep, Reached: true, Size: 1450, Carries: 1354},
			[]string{"vxlan-path:pass:answered", "mtu:fail:VXLAN path to h2 carries 1354 but not 1450 bytes"}},
		{"skipped", driver.PathCheck{Node: "h2", VTEP: vtep, Skipped: "it has no VXLAN network"},
			[]string{"vxlan-path:skip:no VXLAN network"}},
		{"error", driver.PathCheck{Node: "h2", VTEP: vtep, Error: "boom"},
			[]string{"vxlan-path:fail:boom"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &report{}
			pathCheck(r, tc.pc, 4789, local)
			if len(r.Checks) != len(tc.want) {
				t.Fatalf("checks %+v, want %v", r.Checks, tc.want)
			}
			for i, w := range tc.want {
				parts := strings.SplitN(w, ":", 3)
				c := r.Checks[i]
				if c.Check != parts[0] || c.Result != parts[1] || !strings.Contains(c.Detail, parts[2]) || c.Peer != "h2" {
					t.Errorf("check %d: %+v, want %s", i, c, w)
				}
				if (c.Result == ResultFail) != (c.Fix != "") && c.Result != ResultWarn {
					t.Errorf("check %d: result %s with fix %q: every failure, and only failures here, name a fix", i, c.Result, c.Fix)
				}
			}
			if tc.name == "blocked" && !strings.Contains(r.Checks[0].Fix, "allow udp/4789 both ways between 198.18.0.1 and 198.18.0.2") {
				t.Errorf("fix %q does not name the port and both VTEPs", r.Checks[0].Fix)
			}
		})
	}
}

// HOST names a member by node name, host name, gossip address or VTEP,
// never this host.
func TestFindMember(t *testing.T) {
	ms := []gossip.Member{
		{Name: "h1-aaaaaa", Addr: netip.MustParseAddrPort("198.18.0.1:7947"), Self: true},
		{Name: "h2-bbbbbb", Addr: netip.MustParseAddrPort("198.18.0.2:7947"), Meta: gossip.NodeMeta{VTEP: netip.MustParseAddr("198.18.1.2")}},
	}
	for _, q := range []string{"h2-bbbbbb", "h2", "198.18.0.2", "198.18.1.2"} {
		if m, ok := findMember(ms, q); !ok || m.Name != "h2-bbbbbb" {
			t.Errorf("findMember(%q) = %v, %v", q, m.Name, ok)
		}
	}
	for _, q := range []string{"h1", "h1-aaaaaa", "h3", "", "198.18.0.9"} {
		if m, ok := findMember(ms, q); ok {
			t.Errorf("findMember(%q) = %s, want none", q, m.Name)
		}
	}
}

// The text names every failure with its fix and counts the results;
// Failed (the exit status) follows failures only.
func TestDoctorText(t *testing.T) {
	r := Report{Schema: DoctorSchema, Host: "h1", Node: "h1-aaaaaa", Checks: []Check{
		{Check: "gossip", Peer: "h2-b", Result: ResultPass, Detail: "alive"},
		{Check: "kernel", Result: ResultWarn, Detail: "no wireguard", Fix: "modprobe wireguard"},
	}}
	if r.Failed() {
		t.Error("a report with a warning failed")
	}
	r.Checks = append(r.Checks, Check{Check: "mtu", Peer: "h2-b", Result: ResultFail, Detail: "carries 1354 but not 1450 bytes", Fix: "lower the network MTU"})
	if !r.Failed() {
		t.Error("a report with a failure did not fail")
	}
	var b bytes.Buffer
	if err := WriteDoctorText(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"FAIL   mtu h2-b: carries 1354 but not 1450 bytes\n         fix: lower the network MTU", "warn   kernel: no wireguard\n         fix: modprobe wireguard",
		"3 check(s): 1 failed, 1 warning(s), 1 passed, 0 skipped"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, b.String())
		}
	}
}

// The doctor route decodes its body strictly, refuses garbage with an
// error, answers the peer asked for, and says why when the plugin did not
// start (no doctor).
func TestDoctorRoute(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	s := NewServer(logrus.NewEntry(log))
	var asked []string
	s.SetDoctor(func(r DoctorRequest) Report {
		asked = append(asked, r.Peer)
		return Report{Schema: DoctorSchema, Host: "h1", Peer: r.Peer, Checks: []Check{}}
	})
	s.SetBackend(&fakeNet{}, fakeIPAM{}, func() any { return nil }, nil)
	ts := serveTest(t, s)
	if code, m := post(t, ts, DoctorPath, `{"peer":"h2"}`); code != 200 || m["peer"] != "h2" {
		t.Errorf("doctor h2: %d %v", code, m)
	}
	for _, body := range []string{"", "[1,2]", `{"peer":7}`, "\x00garbage"} {
		if code, m := post(t, ts, DoctorPath, body); code == 200 || m["Err"] == "" {
			t.Errorf("body %q answered %d %v, want an error", body, code, m)
		}
	}
	if len(asked) != 1 {
		t.Errorf("doctor ran for %v, want only the valid request", asked)
	}

	down := NewServer(logrus.NewEntry(log))
	down.SetBackend(nil, nil, func() any { return nil }, errors.New("setting POOL is invalid"))
	if code, m := post(t, serveTest(t, down), DoctorPath, `{}`); code == 200 || !strings.Contains(fmt.Sprint(m["Err"]), "POOL") {
		t.Errorf("doctor of a plugin that did not start: %d %v, want its start-up error", code, m)
	}
}

// Undecryptable gossip is a failure naming the sender (and the member
// there) while recent, a warning once older than keyMismatchRecent, and
// HOST keeps only that member's.
func TestKeyChecks(t *testing.T) {
	now := time.Now()
	ms := []gossip.Member{{Name: "h2-b", Addr: netip.MustParseAddrPort("198.18.0.2:7947")}}
	h := gossip.Health{
		Undecryptable:   map[string]uint64{"198.18.0.2": 3, "198.18.0.9": 1},
		UndecryptableAt: map[string]time.Time{"198.18.0.2": now.Add(-time.Minute), "198.18.0.9": now.Add(-time.Hour)},
	}
	r := &report{}
	keyChecks(r, h, ms, "", now)
	if len(r.Checks) != 2 {
		t.Fatalf("checks %+v, want 2", r.Checks)
	}
	if c := r.Checks[0]; c.Result != ResultFail || c.Peer != "h2-b" || !strings.Contains(c.Detail, "3 gossip message(s) from 198.18.0.2 (h2-b) could not be decrypted") {
		t.Errorf("recent: %+v, want a failure naming 198.18.0.2 (h2-b)", c)
	}
	if c := r.Checks[1]; c.Result != ResultWarn || !strings.Contains(c.Detail, "198.18.0.9") {
		t.Errorf("an hour old: %+v, want a warning naming 198.18.0.9", c)
	}
	r = &report{}
	keyChecks(r, h, ms, "h3-c", now)
	if len(r.Checks) != 1 || r.Checks[0].Result != ResultPass {
		t.Errorf("HOST h3-c: %+v, want one pass", r.Checks)
	}
}

// TestDoctorSchemaDocumented: the JSON section of docs/doctor.md documents
// every field of the report, and no other.
func TestDoctorSchemaDocumented(t *testing.T) {
	raw, err := os.ReadFile("../docs/doctor.md")
	if err != nil {
		t.Fatal(err)
	}
	_, doc, ok := strings.Cut(string(raw), "\n## JSON\n")
	if !ok {
		t.Fatal("docs/doctor.md has no JSON section")
	}
	doc, _, _ = strings.Cut(doc, "\n## ")
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\|").FindAllStringSubmatch(doc, -1) {
		documented = append(documented, m[1])
	}
	fields := jsonPaths(reflect.TypeFor[Report](), "")
	for _, f := range fields {
		if !slices.Contains(documented, f) {
			t.Errorf("docs/doctor.md does not document %s", f)
		}
	}
	for _, d := range documented {
		if !slices.Contains(fields, d) {
			t.Errorf("docs/doctor.md documents %s, which the report does not have", d)
		}
	}
	if !strings.Contains(doc, fmt.Sprintf("now **%d**", DoctorSchema)) {
		t.Errorf("docs/doctor.md does not name schema version %d", DoctorSchema)
	}
}
