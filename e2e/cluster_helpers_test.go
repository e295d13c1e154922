//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterHosts are the hosts of the cluster suite that share the gossip key.
func clusterHosts() []string {
	hs := make([]string, s.hosts)
	for i := range hs {
		hs[i] = fmt.Sprintf("h%d", i+1)
	}
	return hs
}

// hostStatus is the part of `grapevine status --json` the tests read.
type hostStatus struct {
	Host     string          `json:"host"`
	Node     string          `json:"node"`
	Joined   bool            `json:"joined"`
	Members  []memberStatus  `json:"members"`
	Networks []networkStatus `json:"networks"`
	Pools    []poolStatus    `json:"pools"`
	Error    string          `json:"error"`
	// Forgotten are the hosts forgotten by agreement.
	Forgotten []string `json:"forgotten"`
}

type memberStatus struct {
	Name  string
	Addr  string
	State json.RawMessage // a number (gossip.MemberState) or its name
	Self  bool
}

// alive reports whether the member's state is "alive" (0 or "alive").
func (m memberStatus) alive() bool {
	v := strings.Trim(string(m.State), `"`)
	return v == "0" || v == "alive"
}

type networkStatus struct {
	ID        string `json:"id"`
	Subnet    string `json:"subnet"`
	Gateway   string `json:"gateway"`
	VNI       int    `json:"vni"`
	Endpoints int    `json:"endpoints"`
}

type poolStatus struct {
	Pool      string   `json:"pool"`
	Space     string   `json:"space"`
	Allocated int      `json:"allocated"`
	Owned     []string `json:"owned"`
}

// statusOf runs `grapevine status --json` in host's namespaces against its plugin.
func statusOf(host string) (hostStatus, string, error) {
	out, stderr, err := harnessCmd("status", host, "--json")
	if err != nil {
		return hostStatus{}, out, fmt.Errorf("grapevine status on %s: %v: %s", host, err, stderr)
	}
	var st hostStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return hostStatus{}, out, fmt.Errorf("decoding the status of %s: %v: %s", host, err, out)
	}
	return st, out, nil
}

// aliveMembers lists the host names (the part of the node name before "-") that
// host's plugin sees alive, itself included.
func aliveMembers(host string) ([]string, error) {
	st, _, err := statusOf(host)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range st.Members {
		if m.alive() {
			names = append(names, nodeHost(m.Name))
		}
	}
	sort.Strings(names)
	return names, nil
}

// nodeHost is the hostname part of a node name ("h2-a1b2c3" → "h2").
func nodeHost(node string) string {
	if i := strings.LastIndexByte(node, '-'); i > 0 {
		return node[:i]
	}
	return node
}

// waitMembers polls until host sees exactly want alive.
func waitMembers(t *testing.T, timeout time.Duration, host string, want []string) {
	t.Helper()
	w := append([]string(nil), want...)
	sort.Strings(w)
	eventually(t, timeout, host+" sees "+strings.Join(w, ",")+" alive", func() error {
		got, err := aliveMembers(host)
		if err != nil {
			return err
		}
		if strings.Join(got, ",") != strings.Join(w, ",") {
			return fmt.Errorf("alive members %v, want %v", got, w)
		}
		return nil
	})
}

// parallel runs f for every item concurrently and waits.
func parallel(items []string, f func(string)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(it)
		}()
	}
	wg.Wait()
}

// pingAll has container c (on host) ping every address once; it returns the
// addresses that did not answer. An empty list is an error (nothing pinged
// proves nothing), and so is output that is not a subset of addrs.
func pingAll(host, c string, addrs []string) ([]string, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("pingAll from %.12s on %s: no address to ping", c, host)
	}
	script := `for a in "$@"; do ping -c 1 -W 1 "$a" >/dev/null 2>&1 || echo "$a"; done`
	out, stderr, err := docker(host, append([]string{"exec", c, "sh", "-c", script, "sh"}, addrs...)...)
	if err != nil {
		return nil, fmt.Errorf("docker exec on %s: %v: %s", host, err, stderr)
	}
	missing := strings.Fields(out)
	for _, m := range missing {
		if !contains(addrs, m) {
			return nil, fmt.Errorf("ping loop in %.12s on %s printed %q, which it was not given (%v)", c, host, out, addrs)
		}
	}
	return missing, nil
}

// ctr is a container of the cluster tests.
type ctr struct {
	host, id, name, ip, mac string
}

func (c ctr) String() string { return c.name + "@" + c.host + "(" + c.ip + ")" }

// startCtr runs a long-running container on host attached to network.
func startCtr(t *testing.T, host, network, name string, extra ...string) ctr {
	t.Helper()
	args := append([]string{"--network", network, "--name", name}, extra...)
	id := runContainer(t, host, append(args, image, "sleep", "36000")...)
	return inspectCtr(t, host, id, name, network)
}

func inspectCtr(t *testing.T, host, id, name, network string) ctr {
	t.Helper()
	out := mustDocker(t, host, "inspect", "-f",
		`{{(index .NetworkSettings.Networks "`+network+`").IPAddress}} {{(index .NetworkSettings.Networks "`+network+`").MacAddress}}`, id)
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("container %s on %s has no address on %s: %q", name, host, network, out)
	}
	return ctr{host: host, id: id, name: name, ip: f[0], mac: f[1]}
}

// fullMesh checks, polling, that every container reaches every container on another
// host. A container with nothing to reach is a failure, and a failed docker exec
// retries the same targets (pollReach): neither can count as reachable.
func fullMesh(t *testing.T, timeout time.Duration, cs []ctr) {
	t.Helper()
	if len(cs) < 2 {
		t.Fatalf("fullMesh of %v: want at least two containers", cs)
	}
	var mu sync.Mutex
	var failures []string
	var items []string
	byName := map[string]ctr{}
	for _, c := range cs {
		items = append(items, c.name)
		byName[c.name] = c
	}
	parallel(items, func(name string) {
		c := byName[name]
		var targets []string
		for _, o := range cs {
			if o.host == c.host {
				continue
			}
			if o.ip == c.ip {
				// a ping would answer itself
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s shares its address with %s", c, o))
				mu.Unlock()
				continue
			}
			targets = append(targets, o.ip)
		}
		err := pollReach(timeout, targets, func(ts []string) ([]string, error) { return pingAll(c.host, c.id, ts) })
		if err != nil {
			mu.Lock()
			failures = append(failures, fmt.Sprintf("%s: %v", c, err))
			mu.Unlock()
		}
	})
	if len(failures) > 0 {
		sort.Strings(failures)
		t.Fatalf("connectivity across hosts after %v:\n%s", timeout, strings.Join(failures, "\n"))
	}
}

// distinct fails t if two containers share an address.
func distinct(t *testing.T, cs []ctr) {
	t.Helper()
	seen := map[string]ctr{}
	for _, c := range cs {
		if o, ok := seen[c.ip]; ok {
			t.Errorf("duplicate address %s: %s and %s", c.ip, o, c)
		}
		seen[c.ip] = c
	}
}

// vxlanDev is grapevine's VXLAN device for the network (by this host's network id).
func vxlanDev(t *testing.T, host, netID string) string {
	t.Helper()
	for _, l := range grapevineLinks(t, host, netID[:11]) {
		if strings.HasPrefix(l, "gvx-") {
			return l
		}
	}
	t.Fatalf("no gvx- device for network %.12s on %s (links %v)", netID, host, grapevineLinks(t, host, ""))
	return ""
}

// fdbEntries returns the device's FDB lines that name a remote VTEP ("MAC dst IP …").
func fdbEntries(host, dev string) ([]string, error) {
	out, stderr, err := inLinkNS(host, dev, "bridge", "fdb", "show", "dev", dev)
	if err != nil {
		return nil, fmt.Errorf("bridge fdb show dev %s on %s: %v: %s", dev, host, err, stderr)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " dst ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines, nil
}

// neighEntries returns the device's neighbour lines.
func neighEntries(host, dev string) ([]string, error) {
	out, stderr, err := inLinkNS(host, dev, "ip", "neigh", "show", "dev", dev)
	if err != nil {
		return nil, fmt.Errorf("ip neigh show dev %s on %s: %v: %s", dev, host, err, stderr)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// hasFDB reports whether lines hold an entry for mac towards vtep.
func hasFDB(lines []string, mac, vtep string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		for i := 1; i+1 < len(f); i++ {
			if f[i] == "dst" && f[i+1] == vtep && strings.EqualFold(f[0], mac) {
				return true
			}
		}
	}
	return false
}

// fdbTowards lists the lines whose VTEP is vtep.
func fdbTowards(lines []string, vtep string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l+" ", " dst "+vtep+" ") {
			out = append(out, l)
		}
	}
	return out
}

// hasNeigh reports whether lines hold a neighbour entry for ip (with mac, if given).
func hasNeigh(lines []string, ip, mac string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == ip && (mac == "" || strings.Contains(strings.ToLower(l), strings.ToLower(mac))) {
			return true
		}
	}
	return false
}

// pluginLog is the plugin's lines in host's dockerd log (the last n), for failure reports.
func pluginLog(run, host string, n int) string {
	out, _, _ := runCmd(cmdTimeout, "sh", "-c", fmt.Sprintf("grep -a 'plugin=' /run/gvtest/%s/%s/dockerd.log | tail -n %d", run, host, n))
	return out
}

// unprogrammed returns the containers of cs whose neighbour entry (IP → MAC) or FDB
// entry (MAC → their host's VTEP) is missing from host's VXLAN device dev.
func unprogrammed(host, dev string, cs []ctr) ([]ctr, error) {
	f, err := fdbEntries(host, dev)
	if err != nil {
		return nil, err
	}
	n, err := neighEntries(host, dev)
	if err != nil {
		return nil, err
	}
	var missing []ctr
	for _, c := range cs {
		fdb := false
		for _, l := range fdbTowards(f, hostAddr(c.host)) {
			if strings.HasPrefix(strings.ToLower(l), strings.ToLower(c.mac)+" ") {
				fdb = true
			}
		}
		if !fdb || !hasNeigh(n, c.ip, c.mac) {
			missing = append(missing, c)
		}
	}
	return missing, nil
}

// logArrivals logs, for every host, how long after start (the heal) it had
// programmed the containers of the other side of the cut (side is the hosts on one
// side): those that ran before the partition (before, unprogrammed when their host
// was declared dead) and those started during it (during, whose records were
// written while the two sides could not talk). It polls until limit and asserts
// nothing: reachability is checked by the caller.
func logArrivals(t *testing.T, start time.Time, limit time.Duration, hosts, side []string, before, during []ctr, netIDs map[string]string) {
	t.Helper()
	type want struct {
		dev            string
		before, during []ctr
		tBefore        time.Duration // 0 until programmed
		tDuring        time.Duration
		err            error
	}
	other := func(h string, cs []ctr) []ctr {
		var out []ctr
		for _, c := range cs {
			if contains(side, h) != contains(side, c.host) {
				out = append(out, c)
			}
		}
		return out
	}
	ws := map[string]*want{}
	for _, h := range hosts {
		ws[h] = &want{dev: vxlanDev(t, h, netIDs[h]), before: other(h, before), during: other(h, during)}
	}
	deadline := start.Add(limit)
	for {
		pending := 0
		for _, h := range hosts {
			w := ws[h]
			if w.tBefore > 0 && w.tDuring > 0 {
				continue
			}
			pending++
			now := time.Since(start)
			if w.tBefore == 0 {
				m, err := unprogrammed(h, w.dev, w.before)
				if w.err = err; err == nil && len(m) == 0 {
					w.tBefore = now
				}
			}
			if w.tDuring == 0 {
				m, err := unprogrammed(h, w.dev, w.during)
				if w.err = err; err == nil && len(m) == 0 {
					w.tDuring = now
				}
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	show := func(d time.Duration) string {
		if d == 0 {
			return fmt.Sprintf("not within %v", limit)
		}
		return d.Round(time.Millisecond).String()
	}
	for _, h := range hosts {
		w := ws[h]
		line := fmt.Sprintf("%s programmed the other side's %d earlier containers %s and %d started during the partition %s after heal",
			h, len(w.before), show(w.tBefore), len(w.during), show(w.tDuring))
		if w.err != nil && (w.tBefore == 0 || w.tDuring == 0) {
			line += fmt.Sprintf(" (last error: %v)", w.err)
		}
		t.Log(line)
	}
}

// checkStatusText parses the text `grapevine status` of the first of hosts
// (each host running one container on subnet) and asserts its counts: every
// host of the cluster alive in PEERS, and the network's one local and
// len(hosts)-1 remote endpoints, one on each other host.
func checkStatusText(t *testing.T, out string, hosts []string, subnet string) {
	t.Helper()
	peers, err := parseStatusTable(out, "PEERS")
	if err != nil {
		t.Fatal(err)
	}
	var alive []string
	for _, r := range peers.rows {
		if peers.cell(r, "STATE") == "alive" {
			alive = append(alive, nodeHost(strings.TrimSuffix(peers.cell(r, "NODE"), " (this host)")))
		}
	}
	sort.Strings(alive)
	if strings.Join(alive, ",") != strings.Join(hosts, ",") || len(peers.rows) != len(hosts) {
		t.Errorf("status PEERS: %d rows, alive %v; want exactly %v alive", len(peers.rows), alive, hosts)
	}
	nets, err := parseStatusTable(out, "NETWORKS")
	if err != nil {
		t.Fatal(err)
	}
	var row []string
	for _, r := range nets.rows {
		if nets.cell(r, "SUBNET") == subnet {
			row = r
		}
	}
	if row == nil {
		t.Fatalf("status NETWORKS has no row for %s", subnet)
	}
	var byHost []string
	for _, kv := range strings.Fields(nets.cell(row, "REMOTE BY HOST")) {
		node, n, _ := strings.Cut(kv, "=")
		byHost = append(byHost, nodeHost(node)+"="+n)
	}
	sort.Strings(byHost)
	var wantBy []string
	for _, h := range hosts[1:] {
		wantBy = append(wantBy, h+"=1")
	}
	local, remote := nets.cell(row, "LOCAL"), nets.cell(row, "REMOTE")
	if local != "1" || remote != fmt.Sprint(len(hosts)-1) || strings.Join(byHost, " ") != strings.Join(wantBy, " ") {
		t.Errorf("status NETWORKS %s: local %q remote %q by host %v; want 1, %d, %v", subnet, local, remote, byHost, len(hosts)-1, wantBy)
	}
}
