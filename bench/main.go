// Command gvbench is grapevine's benchmark driver (`make bench`).
//
// It owns the measurements, their statistics and the report: it brings up
// nothing itself (scripts/bench.sh starts the multi-host harness and passes
// its run name), programs the reference paths (underlay, hand-programmed
// kernel VXLAN) by hand, creates Docker's and grapevine's networks on the
// harness hosts, runs iperf3 and its own request/response and convergence
// probes in the endpoints' network namespaces, calls the Go benchmarks of
// package gossip and ipam, drives the plugin socket the way Docker does, and
// prints a markdown report (also written to docs/BENCHMARKS.md).
//
// Subcommands:
//
//	gvbench run [flags]            the benchmark against a harness run (all of
//	                               it, or the -parts and -paths selected)
//	gvbench needs-harness [flags]  exit 0 when `run` with these flags needs a
//	                               harness, 1 when not (scripts/bench.sh)
//	gvbench udp-echo ADDR          echo UDP datagrams (latency server)
//	gvbench udp-rr ADDR N          N request/response round trips; prints p50/p99 µs
//	gvbench dns-upstream ADDR      serve the harness's upstream DNS (names part)
//
// Nothing here asserts a target: targets are reported as met or missed.
package main

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
)

func main() {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	entry := logrus.NewEntry(log)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gvbench run|needs-harness|udp-echo|udp-rr|dns-upstream …")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(entry, os.Args[2:])
	case "needs-harness":
		cfg, perr := parseRunFlags(os.Args[2:])
		if perr != nil {
			entry.Error(perr)
			os.Exit(2)
		}
		if !cfg.needsHarness() {
			os.Exit(1)
		}
		return
	case "udp-echo":
		err = cmdUDPEcho(os.Args[2:])
	case "udp-rr":
		err = cmdUDPRR(os.Args[2:])
	case "dns-upstream":
		err = cmdDNSUpstream(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want run, needs-harness, udp-echo, udp-rr or dns-upstream", os.Args[1])
	}
	if err != nil {
		entry.Error(err)
		os.Exit(1)
	}
}
