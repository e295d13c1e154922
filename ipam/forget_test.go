package ipam

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"grapevine/gossip/gossiptest"
)

func forgetCfg() Config {
	cfg := fastCfg()
	cfg.ForgetAfter = 500 * time.Millisecond
	return cfg
}

// TestForgetMinorityContinues: two of three hosts die for good; the last
// one is refused while they may still be coming back, then forgets them,
// allocates from their blocks and divides a new pool alone.
func TestForgetMinorityContinues(t *testing.T) {
	cfg := forgetCfg()
	cfg.ForgetAfter = 3 * time.Second
	n, nodes := startCluster(t, cfg, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	old := a.pool("198.19.50.0/28", "")
	a.mustAddr(old)
	for _, x := range []*cnode{b, c} {
		n.Kill(x.name)
		x.stop()
	}
	_, err := a.d.Forget([]string{"b", "c"})
	wantErr(t, err, ErrConflict, "cannot forget b, c: b ")
	gossiptest.Eventually(t, 10*time.Second, "a to see b and c fail", func() bool { return aliveCount(a.d) == 1 })
	// Not gone for FORGET_AFTER yet: refused, naming the time left.
	_, err = a.d.Forget([]string{"b", "c"})
	wantErr(t, err, ErrConflict, "cannot forget b, c: b has been absent for only")
	wantErr(t, err, nil, "it can be forgotten in")
	gossiptest.Eventually(t, 10*time.Second, "b and c absent for FORGET_AFTER", func() bool {
		return a.d.cl.absentFor("b") > a.d.cl.forgetAfter && a.d.cl.absentFor("c") > a.d.cl.forgetAfter
	})
	// A new pool cannot be divided yet: 1 of 3 known hosts.
	if _, err := a.addr(a.pool("198.19.51.0/24", ""), ""); err == nil {
		t.Fatal("a divided a new pool alone while b and c were still known")
	}
	res, err := a.d.Forget([]string{"c", "b", "b"})
	if err != nil {
		t.Fatalf("forget b, c: %v", err)
	}
	if !slices.Equal(res.Forgotten, []string{"b", "c"}) || !slices.Equal(res.Known, []string{"a"}) || res.Blocks == 0 {
		t.Fatalf("forget result %+v, want b and c forgotten, a alone, their blocks taken", res)
	}
	if got := a.d.Forgotten(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("Forgotten() = %v", got)
	}
	// The quorum set shrank: a new pool is divided by a alone.
	if _, err := a.addr(a.pool("198.19.52.0/24", ""), ""); err != nil {
		t.Fatalf("new pool after forgetting: %v", err)
	}
	// Their blocks are a's: every address of the /28 but the three reserved.
	for range 12 {
		if _, err := a.addr(old, ""); err != nil {
			t.Fatalf("allocating from the forgotten hosts' blocks: %v", err)
		}
	}
	if owners := blockOwners(a.status(old)); slices.ContainsFunc(owners, func(s string) bool { return s[len(s)-2:] != "=a" }) {
		t.Fatalf("blocks after forgetting: %v, want all a's", owners)
	}
	// Forgetting again is refused: they are no longer known.
	_, err = a.d.Forget([]string{"b"})
	wantErr(t, err, ErrConflict, "b is not a known host (known: a)")

	// A restart keeps them forgotten (the decision is in a's own store).
	a.stop()
	a.start()
	if got := a.d.cl.knownHosts(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("known hosts after a restart: %v, want [a]", got)
	}
	if _, err := a.addr(a.pool("198.19.54.0/24", ""), ""); err != nil {
		t.Fatalf("new pool after a restart: %v", err)
	}

	// b comes back with its old state: it learns that it was forgotten and
	// gives no address, saying so; a still counts it in nothing.
	b.start()
	gossiptest.Eventually(t, 20*time.Second, "b to learn that it was forgotten", func() bool { return b.d.IsForgotten("b") })
	if !a.d.IsForgotten("b") || a.d.IsForgotten("a") {
		t.Fatalf("a: IsForgotten(b) = %v, IsForgotten(a) = %v", a.d.IsForgotten("b"), a.d.IsForgotten("a"))
	}
	_, err = b.addr(b.pool("198.19.50.0/28", ""), "")
	wantErr(t, err, ErrNotOwned, "the cluster forgot this host (b) by agreement")
	wantErr(t, err, nil, "move its state directory aside")
}

// TestForgetRefusedWhileAlive: a live host, this host and unknown names
// cannot be forgotten, and nothing changes.
func TestForgetRefusedWhileAlive(t *testing.T) {
	_, nodes := startCluster(t, forgetCfg(), "a", "b")
	a := nodes[0]
	_, err := a.d.Forget([]string{"b"})
	wantErr(t, err, ErrConflict, "b is alive: only a host that is gone for good can be forgotten")
	_, err = a.d.Forget([]string{"a"})
	wantErr(t, err, ErrInvalid, "name one or more other hosts")
	_, err = a.d.Forget([]string{"x y"})
	wantErr(t, err, ErrInvalid, "cannot forget")
	_, err = a.d.Forget([]string{"zz"})
	wantErr(t, err, ErrConflict, "zz is not a known host")
	if got := a.d.cl.knownHosts(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("known hosts %v after refused forgets", got)
	}
}

// TestForgetNeedsEveryStayingHost: with c dead, b alive but cut off from a,
// a cannot forget c (b must agree); a member proposing to forget a live host
// (skipping its own checks) is refused by the others, and its own
// acceptance decides nothing.
func TestForgetNeedsEveryStayingHost(t *testing.T) {
	n, nodes := startCluster(t, forgetCfg(), "a", "b", "c", "d")
	a, b, c, d := nodes[0], nodes[1], nodes[2], nodes[3]
	ids := map[*cnode]string{a: a.pool("198.19.53.0/24", ""), c: c.pool("198.19.53.0/24", "")}
	a.mustAddr(ids[a])
	n.Kill(d.name)
	d.stop()
	n.Partition([]string{"a"}, []string{"b", "c"})
	gossiptest.Eventually(t, 10*time.Second, "d, b and c absent for FORGET_AFTER on a", func() bool {
		return a.d.cl.absentFor("d") > a.d.cl.forgetAfter && a.d.cl.absentFor("b") > a.d.cl.forgetAfter
	})
	// Two sides forgetting different hosts: neither gets every staying host.
	_, err := a.d.Forget([]string{"d"})
	wantErr(t, err, ErrConflict, "every other known host must agree")
	_, err = b.d.Forget([]string{"a"})
	wantErr(t, err, ErrConflict, "every other known host must agree")
	n.Heal()
	waitAlive(t, []*cnode{a, b, c}, 3)

	// The honest forget of the dead host d, now that all who stay agree.
	if _, err := b.d.Forget([]string{"d"}); err != nil {
		t.Fatalf("forget d with every staying host reachable: %v", err)
	}
	gossiptest.Eventually(t, 10*time.Second, "every host to learn that d is forgotten", func() bool {
		for _, x := range []*cnode{a, b, c} {
			x.d.catchUpForgets()
			if x.d.cl.knownSet()["d"] {
				return false
			}
		}
		return true
	})
	// d's blocks are b's in every host's view (b wrote them, the others
	// accepted them as the beneficiary of the forget).
	gossiptest.Eventually(t, 10*time.Second, "a and c to see d's blocks given to b", func() bool {
		for x, id := range ids {
			owners := blockOwners(x.status(id))
			if slices.ContainsFunc(owners, func(s string) bool { return s[len(s)-2:] == "=d" }) ||
				!slices.ContainsFunc(owners, func(s string) bool { return s[len(s)-2:] == "=b" }) {
				return false
			}
		}
		return true
	})

	// A forged forget of a live host: a proposes forgetting c, bypassing
	// its own checks; only b's agreement is missing, and b refuses (c is
	// alive). c stays known everywhere.
	raw, _ := json.Marshal(forgetValue{Version: recordVersion, Hosts: []string{"c"}, To: "a"})
	inst := forgetInstance(a.d.cl.forgetGen() + 1)
	if _, err := a.d.cl.propose(inst, time.Now().Add(2*time.Second), func() (json.RawMessage, error) { return raw, nil }); err == nil {
		t.Fatal("a forget of a live host was agreed")
	}
	for _, x := range []*cnode{a, b, c} {
		x.d.catchUpForgets()
		if !x.d.cl.knownSet()["c"] || x.d.cl.isForgotten("c") {
			t.Fatalf("%s forgot the live host c", x.name)
		}
	}
}

// TestDecodeForgetRefusesMalformed: a forget value from another host is
// refused unless its hosts are node names, sorted and distinct, and its
// beneficiary is a node name outside them; instance names are exact.
func TestDecodeForgetRefusesMalformed(t *testing.T) {
	for _, raw := range []string{
		`null`, `{}`, `[]`, `{"hosts":[],"to":"a"}`, `{"hosts":["b"]}`, `{"hosts":["b"],"to":""}`,
		`{"hosts":["b","a"],"to":"c"}`, `{"hosts":["b","b"],"to":"c"}`, `{"hosts":["b"],"to":"b"}`,
		`{"hosts":["-b"],"to":"a"}`, `{"hosts":["b c"],"to":"a"}`, `{"hosts":["b"],"to":"a/x"}`, `{"hosts":"b","to":"a"}`,
	} {
		if v, err := decodeForget(json.RawMessage(raw)); err == nil {
			t.Errorf("decodeForget(%s) = %+v, want a refusal", raw, v)
		}
	}
	if v, err := decodeForget(json.RawMessage(`{"version":1,"hosts":["b","c.d_e-1"],"to":"a"}`)); err != nil || v.To != "a" {
		t.Errorf("a well-formed value: %+v, %v", v, err)
	}
	for _, inst := range []string{"forget/0", "forget/-1", "forget/01", "forget/1/x", "forget/", "init/1", "forget/x"} {
		if n, ok := parseForget(inst); ok {
			t.Errorf("parseForget(%q) = %d, want a refusal", inst, n)
		}
	}
	if n, ok := parseForget("forget/12"); !ok || n != 12 {
		t.Errorf("parseForget(forget/12) = %d, %v", n, ok)
	}
}
