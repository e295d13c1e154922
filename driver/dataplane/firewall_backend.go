package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// iptables backends, as the host's own iptables names them.
const (
	backendNFT    = "nft"
	backendLegacy = "legacy"
)

// findXtables chooses the iptables backend the host's rules (Docker's above
// all) are written with, the way kube-proxy's iptables-wrapper does, and
// locates its binaries: iptables-<mode>, iptables-<mode>-save and
// iptables-<mode>-restore (the plugin rootfs ships both backends). Rules
// written with the other backend would sit where the host's rules do not see
// them.
func findXtables() (xtables, error) {
	var found []xtables
	var errs []error
	for _, mode := range []string{backendNFT, backendLegacy} {
		x, err := lookXtables(mode)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		found = append(found, x)
	}
	switch len(found) {
	case 0:
		return xtables{}, fmt.Errorf("find iptables (the plugin rootfs must contain iptables-nft and iptables-legacy with their -save and -restore): %w", errors.Join(errs...))
	case 1:
		return found[0], nil
	}
	nft, legacy := tableShape(found[0]), tableShape(found[1])
	return found[chooseBackend(nft, legacy)], nil
}

// lookXtables finds the three binaries of mode in PATH.
func lookXtables(mode string) (xtables, error) {
	x := xtables{mode: mode}
	for _, b := range []struct {
		dst  *string
		name string
	}{{&x.ipt, "iptables-" + mode}, {&x.saveBin, "iptables-" + mode + "-save"}, {&x.restoreBin, "iptables-" + mode + "-restore"}} {
		p, err := exec.LookPath(b.name)
		if err != nil {
			return xtables{}, fmt.Errorf("find %s: %w", b.name, err)
		}
		*b.dst = p
	}
	return x, nil
}

// shape is what one backend holds in this namespace.
type shape struct {
	rules  int  // "-A" lines in all its tables
	docker bool // Docker's chains are there
	err    error
}

// tableShape reads every table of x (bounded: a wedged backend counts as empty).
func tableShape(x xtables) shape {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.saveBin)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return shape{err: err}
	}
	var sh shape
	for _, l := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(l, "-A "):
			sh.rules++
		case strings.HasPrefix(l, ":DOCKER-USER ") || strings.HasPrefix(l, ":DOCKER "):
			sh.docker = true
		}
	}
	return sh
}

// chooseBackend returns 0 for nft, 1 for legacy: the one holding Docker's
// chains when only one does, else the one with more rules (kube-proxy's
// iptables-wrapper), nft on a tie (the default of current distributions).
func chooseBackend(nft, legacy shape) int {
	switch {
	case legacy.err != nil:
		return 0
	case nft.err != nil:
		return 1
	case nft.docker != legacy.docker:
		if legacy.docker {
			return 1
		}
		return 0
	case legacy.rules > nft.rules:
		return 1
	}
	return 0
}
