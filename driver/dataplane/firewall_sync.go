package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/sirupsen/logrus"
)

// xtables names the iptables, iptables-save and iptables-restore binaries of
// one backend (nft or legacy): mixing them would write to the other backend.
type xtables struct {
	mode                     string // "nft" or "legacy"
	ipt, saveBin, restoreBin string
}

func (x xtables) command(tool string, args ...string) *exec.Cmd {
	bin := x.restoreBin
	if tool == "iptables-save" {
		bin = x.saveBin
	}
	return exec.Command(bin, args...)
}

// save returns the rules of one table as iptables-save prints them.
func (x xtables) save(table string) (string, error) {
	cmd := x.command("iptables-save", "-t", table)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("iptables-save -t %s: %w: %s", table, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// restore applies input with --noflush: only the chains it declares are
// flushed, and each table is committed atomically.
func (x xtables) restore(input string) error {
	cmd := x.command("iptables-restore", "--noflush", "-w")
	cmd.Stdin = strings.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s\ninput:\n%s", err, strings.TrimSpace(stderr.String()), input)
	}
	return nil
}

// savedTable is one table parsed from iptables-save.
type savedTable struct {
	chains map[string]bool     // every chain, built-in or not
	rules  map[string][]string // chain → rule text after "-A CHAIN "
}

func parseSave(text string) savedTable {
	t := savedTable{chains: map[string]bool{}, rules: map[string][]string{}}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) > 0 {
				t.chains[f[0]] = true
			}
		case strings.HasPrefix(line, "-A "):
			chain, rule, _ := strings.Cut(line[3:], " ")
			t.rules[chain] = append(t.rules[chain], rule)
		}
	}
	return t
}

// ours returns grapevine's chain contents of the table as "-A CHAIN …" lines.
func (t savedTable) ours(chains []string) []string {
	var lines []string
	for _, c := range chains {
		for _, r := range t.rules[c] {
			lines = append(lines, "-A "+c+" "+r)
		}
	}
	return lines
}

// appliedTable is what a table looked like right after grapevine last wrote it.
type appliedTable struct {
	desired  []string
	readback []string
}

// SyncFirewall makes grapevine's chains hold exactly the rules for fw. Each
// table is replaced in one iptables-restore transaction (only grapevine's chains
// are flushed and refilled, so established traffic never meets a half-written
// chain), and only when what the kernel holds differs from what is wanted.
func (k *Kernel) SyncFirewall(fw Firewall) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.nsDirs) > 0 {
		fw = uplinkFirewall(fw)
	}
	saved, err := k.saveAll()
	if err != nil {
		return err
	}
	if !saved["filter"].chains["DOCKER-USER"] {
		// Docker may write its rules after grapevine started (a boot):
		// follow it to its backend once they appear there.
		if saved, err = k.followDockersBackend(saved); err != nil {
			return err
		}
	}
	want, err := renderFirewall(fw, dockerBridges(saved["filter"]))
	if err != nil {
		return err
	}
	for _, tc := range fwChains {
		if tc.table == "raw" {
			if err := k.syncVXLAN(fw.VXLAN, tc.chains, want[tc.table], saved[tc.table]); err != nil {
				return err
			}
			continue
		}
		if err := k.syncTable(tc.table, tc.chains, want[tc.table], saved[tc.table]); err != nil {
			return err
		}
	}
	if hasForwarding(fw) {
		k.enableForwarding()
	}
	for _, br := range localnetBridges(fw) {
		if err := routeLocalnet(br); err != nil {
			return err
		}
	}
	return nil
}

// routeLocalnet sets net.ipv4.conf.<link>.route_localnet=1: packets to
// 127.0.0.1:P that grapevine's DNAT sends to a container may then leave
// through the link.
func routeLocalnet(link string) error {
	path := "/proc/sys/net/ipv4/conf/" + link + "/route_localnet"
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no such link (yet): the sync after the bridge is made sets it
	}
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err == nil {
		err = os.WriteFile(path, []byte("1\n"), 0o644)
	}
	if err != nil {
		return fmt.Errorf("set route_localnet=1 on %s (published ports answer on 127.0.0.1 through it; is /proc/sys/net writable?): %w", link, err)
	}
	return nil
}

// saveAll reads every table grapevine writes to.
func (k *Kernel) saveAll() (map[string]savedTable, error) {
	saved := map[string]savedTable{}
	for _, tc := range fwChains {
		text, err := k.xt.save(tc.table)
		if err != nil {
			return nil, err
		}
		saved[tc.table] = parseSave(text)
	}
	return saved, nil
}

// followDockersBackend switches to the other iptables backend when that is
// where the host's rules are now: grapevine's chains are removed from the
// current one first. It returns the tables of the backend in use.
func (k *Kernel) followDockersBackend(saved map[string]savedTable) (map[string]savedTable, error) {
	x, err := findXtables()
	if err != nil || x.mode == k.xt.mode {
		return saved, nil // no better backend found: keep the one in use
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(10), iptables.Path(x.ipt))
	if err != nil {
		return nil, fmt.Errorf("switch to iptables-%s, where the host's rules are: %w", x.mode, err)
	}
	for _, tc := range fwChains {
		if err := k.removeTable(tc.table, tc.chains, saved[tc.table]); err != nil {
			return nil, fmt.Errorf("remove grapevine's chains from iptables-%s before switching to iptables-%s: %w", k.xt.mode, x.mode, err)
		}
	}
	k.log.WithFields(logrus.Fields{"from": k.xt.mode, "to": x.mode}).Warn("the host's iptables rules are written with the other backend: grapevine follows them")
	k.xt, k.ipt, k.applied = x, ipt, map[string]appliedTable{}
	return k.saveAll()
}

// uplinkFirewall names, wherever fw names a bridge, the bridge's uplink:
// an isolated bridge's traffic enters and leaves the host namespace there.
func uplinkFirewall(fw Firewall) Firewall {
	out := Firewall{Networks: slices.Clone(fw.Networks), Ports: slices.Clone(fw.Ports), Shims: fw.Shims, VXLAN: fw.VXLAN}
	for i, n := range out.Networks {
		if up, _, err := uplinkNames(n.Bridge); err == nil {
			out.Networks[i].Bridge = up
		}
	}
	for i, p := range out.Ports {
		if up, _, err := uplinkNames(p.Bridge); err == nil {
			out.Ports[i].Bridge = up
		}
	}
	return out
}

// syncTable brings one table's grapevine chains and jumps to the wanted state;
// saved is the table as it is now.
func (k *Kernel) syncTable(table string, chains, want []string, saved savedTable) error {
	have := saved.ours(chains)
	chainsOK := true
	for _, c := range chains {
		chainsOK = chainsOK && saved.chains[c]
	}
	last := k.applied[table]
	rulesOK := chainsOK && (slices.Equal(have, want) ||
		(slices.Equal(last.desired, want) && slices.Equal(last.readback, have)))

	jumpLines, err := k.jumpFixes(table, saved)
	if err != nil {
		return err
	}
	if rulesOK && len(jumpLines) == 0 {
		return nil
	}

	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", table)
	if !rulesOK {
		for _, c := range chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		for _, l := range want {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range jumpLines {
		b.WriteString(l + "\n")
	}
	b.WriteString("COMMIT\n")
	if err := k.xt.restore(b.String()); err != nil {
		return fmt.Errorf("write grapevine chains %s of table %s: %w", strings.Join(chains, ", "), table, err)
	}
	k.restores++
	k.log.WithFields(logrus.Fields{"table": table, "rules": len(want), "jumps": len(jumpLines)}).Info("updated grapevine firewall chains")

	if !rulesOK {
		text, err := k.xt.save(table)
		if err != nil {
			return err
		}
		back := parseSave(text).ours(chains)
		k.applied[table] = appliedTable{desired: slices.Clone(want), readback: back}
		if !slices.Equal(back, want) {
			k.log.WithField("table", table).Debug("iptables prints grapevine's rules differently from how they were written; comparing against the read-back from now on")
		}
	}
	return nil
}

// jumpFixes returns the restore lines that make every jump into grapevine's
// chains of this table present exactly once, and the FORWARD jump right after
// Docker's own.
func (k *Kernel) jumpFixes(table string, saved savedTable) ([]string, error) {
	var lines []string
	for _, j := range fwJumps {
		if j.table != table {
			continue
		}
		if j.afterDocker {
			lines = append(lines, placeAfterDocker(j, saved.rules[j.chain])...)
			continue
		}
		fix, err := k.appendedJumpFix(j, saved)
		if err != nil {
			return nil, err
		}
		lines = append(lines, fix...)
	}
	for _, j := range obsoleteJumps {
		for _, r := range saved.rules[j.chain] {
			if j.table == table && r == j.rule {
				lines = append(lines, fmt.Sprintf("-D %s %s", j.chain, j.rule))
			}
		}
	}
	return lines, nil
}

// placeAfterDocker returns the restore lines that leave exactly one copy of j
// in its chain, directly after the last of Docker's jumps to DOCKER-USER and
// DOCKER-ISOLATION-STAGE-1 (at the top when neither is there). Docker inserts
// those jumps at the top again whenever it starts or creates a network, and
// inserts each new bridge's accepts above everything else: so grapevine's
// position is checked and repaired on every sync, not only written once.
func placeAfterDocker(j fwJump, rules []string) []string {
	var ours []int
	want := 0 // index in rules without ours
	seen := 0 // rules that are not ours, so far
	for i, r := range rules {
		if r == j.rule {
			ours = append(ours, i)
			continue
		}
		seen++
		if slices.Contains(dockerFirst, ruleTarget(r)) {
			want = seen
		}
	}
	if len(ours) == 1 && ours[0] == want {
		return nil
	}
	var lines []string
	for range ours {
		lines = append(lines, fmt.Sprintf("-D %s %s", j.chain, j.rule))
	}
	return append(lines, fmt.Sprintf("-I %s %d %s", j.chain, want+1, j.rule))
}

// ruleTarget is the chain or target a rule jumps to ("" for none).
func ruleTarget(rule string) string {
	args := splitRule(rule)
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-j" || args[i] == "-g" {
			return args[i+1]
		}
	}
	return ""
}

// appendedJumpFix returns the restore lines that leave exactly one copy of the
// jump j, appended to its chain when missing.
func (k *Kernel) appendedJumpFix(j fwJump, saved savedTable) ([]string, error) {
	n := 0
	for _, r := range saved.rules[j.chain] {
		if r == j.rule {
			n++
		}
	}
	if n == 0 && saved.chains[ruleTarget(j.rule)] {
		// iptables may print the rule in another form: ask it directly.
		ok, err := k.ipt.Exists(j.table, j.chain, splitRule(j.rule)...)
		if err != nil {
			return nil, fmt.Errorf("check jump %q in %s/%s: %w", j.rule, j.table, j.chain, err)
		}
		if ok {
			return nil, nil
		}
	}
	var lines []string
	if n == 0 {
		lines = append(lines, fmt.Sprintf("-A %s %s", j.chain, j.rule))
	}
	for ; n > 1; n-- {
		lines = append(lines, fmt.Sprintf("-D %s %s", j.chain, j.rule))
	}
	return lines, nil
}

// enableForwarding turns on IPv4 forwarding, which non-internal networks need.
// A read-only /proc/sys (a container without the right mount) is a warning.
func (k *Kernel) enableForwarding() {
	const path = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return
	}
	if err == nil {
		err = os.WriteFile(path, []byte("1\n"), 0o644)
	}
	if err != nil {
		k.log.WithError(err).Warn("could not enable net.ipv4.ip_forward; containers on non-internal networks cannot reach beyond this host until it is set to 1")
		return
	}
	k.log.Info("enabled net.ipv4.ip_forward")
}

// RemoveFirewall deletes all of grapevine's jumps and chains, then the VTEP
// set. Missing ones are success.
func (k *Kernel) RemoveFirewall() error {
	k.mu.Lock()
	defer k.mu.Unlock()

	var errs []error
	for _, tc := range fwChains {
		text, err := k.xt.save(tc.table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, k.removeTable(tc.table, tc.chains, parseSave(text)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := k.destroyVTEPSet(); err != nil {
		return err
	}
	k.log.Info("removed grapevine firewall chains")
	return nil
}

// removeTable deletes grapevine's jumps and chains of one table; saved is
// the table as it is now.
func (k *Kernel) removeTable(table string, chains []string, saved savedTable) error {
	var errs []error
	for _, j := range slices.Concat(fwJumps, obsoleteJumps) {
		if j.table != table || !saved.chains[ruleTarget(j.rule)] {
			continue // no chain, so no jump to it either
		}
		if err := k.deleteAll(j); err != nil {
			errs = append(errs, err)
		}
	}
	// Flush all first: GRAPEVINE-FORWARD refers to GRAPEVINE-ISOLATION.
	for _, c := range chains {
		if !saved.chains[c] {
			continue
		}
		if err := k.ipt.ClearChain(table, c); err != nil {
			errs = append(errs, fmt.Errorf("flush chain %s/%s: %w", table, c, err))
		}
	}
	for _, c := range chains {
		if !saved.chains[c] {
			continue
		}
		if err := k.ipt.DeleteChain(table, c); err != nil && !isNoChain(err) {
			errs = append(errs, fmt.Errorf("delete chain %s/%s (is another rule still jumping to it?): %w", table, c, err))
		}
	}
	delete(k.applied, table)
	return errors.Join(errs...)
}

// syncVXLAN puts the VXLAN ingress filter in place (set first, then the rule
// that uses it) or, for a zero Port, removes it (rule first, then the set).
func (k *Kernel) syncVXLAN(in VXLANIngress, chains, want []string, saved savedTable) error {
	if in.Port == 0 {
		if err := k.removeTable("raw", chains, saved); err != nil {
			return err
		}
		return k.destroyVTEPSet()
	}
	if err := k.ensureVTEPSet(in); err != nil {
		return err
	}
	return k.syncTable("raw", chains, want, saved)
}

// deleteAll removes every copy of the jump j.
func (k *Kernel) deleteAll(j fwJump) error {
	spec := splitRule(j.rule)
	for range 100 { // bounded: a rule that stays after -D is reported below
		ok, err := k.ipt.Exists(j.table, j.chain, spec...)
		if err == nil && !ok {
			return nil
		}
		if err == nil {
			err = k.ipt.Delete(j.table, j.chain, spec...)
		}
		if err != nil {
			if isNoChain(err) {
				return nil
			}
			return fmt.Errorf("delete jump %q from %s/%s: %w", j.rule, j.table, j.chain, err)
		}
	}
	return fmt.Errorf("delete jump %q from %s/%s: still present after 100 deletions", j.rule, j.table, j.chain)
}

// isNoChain reports an iptables error saying the chain or rule does not exist.
func isNoChain(err error) bool {
	var e *iptables.Error
	return errors.As(err, &e) && e.IsNotExist()
}

// splitRule splits iptables-save rule text into arguments, honouring double
// quotes and backslash escapes inside them.
func splitRule(s string) []string {
	var (
		args  []string
		cur   strings.Builder
		inQ   bool
		begun bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQ && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQ = !inQ
			begun = true
		case !inQ && (c == ' ' || c == '\t'):
			if begun {
				args = append(args, cur.String())
				cur.Reset()
				begun = false
			}
		default:
			cur.WriteByte(c)
			begun = true
		}
	}
	if begun {
		args = append(args, cur.String())
	}
	return args
}
