// Command grapevine is the grapevine Docker plugin (`grapevine serve`, the
// managed plugin's entrypoint) and its operator tools (`grapevine status`,
// `grapevine doctor`, `grapevine forget`, `grapevine rotate-key`).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"grapevine/plugin"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		opts := plugin.DefaultOptions()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.StringVar(&opts.Socket, "socket", opts.Socket, "unix socket to serve both protocols on")
		fs.StringVar(&opts.StateDir, "state-dir", opts.StateDir, "directory of the persisted state")
		fs.StringVar(&opts.NetNSDir, "netns-dir", opts.NetNSDir, "shared-mount directory pinning each VXLAN network's namespace ('' = bridges in the host namespace)")
		fs.DurationVar(&opts.ReconcileEvery, "reconcile-every", opts.ReconcileEvery, "period of the kernel reconcile loop")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if err := plugin.Serve(context.Background(), opts, os.Getenv); err != nil {
			fmt.Fprintln(os.Stdout, "grapevine:", err)
			return 1
		}
		return 0
	case "status":
		fs := flag.NewFlagSet("status", flag.ContinueOnError)
		socket := fs.String("socket", "", "plugin socket (default: the one under /run/docker/plugins)")
		asJSON := fs.Bool("json", false, "print the status as JSON (schema: docs/status.md)")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if *socket == "" {
			s, err := plugin.FindSocket()
			if err != nil {
				fmt.Fprintln(os.Stderr, "grapevine status:", err)
				return 1
			}
			*socket = s
		}
		raw, err := plugin.QueryStatus(context.Background(), *socket)
		if err != nil {
			fmt.Fprintln(os.Stderr, "grapevine status:", err)
			return 1
		}
		if *asJSON {
			// the plugin's own JSON, once it is known to be the documented
			// schema (docs/status.md)
			if _, err := plugin.DecodeStatus(raw); err != nil {
				fmt.Fprintln(os.Stderr, "grapevine status:", err)
				return 1
			}
			fmt.Println(string(raw))
			return 0
		}
		if err := plugin.PrintStatus(os.Stdout, raw); err != nil {
			fmt.Fprintln(os.Stderr, "grapevine status:", err)
			return 1
		}
		return 0
	case "doctor":
		return doctor(args)
	case "forget":
		return runForget(args)
	case "rotate-key":
		return rotateKey(args)
	case "help", "-h", "--help":
		fmt.Println(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "grapevine: unknown command %q (want serve, status, doctor, forget or rotate-key)\n", cmd)
	return 2
}

const usage = "usage: grapevine [serve [--socket PATH] [--state-dir DIR] [--netns-dir DIR]] | status [--socket PATH] [--json] | doctor [--socket PATH] [--json] [HOST] | forget [--socket PATH] HOST… | rotate-key [--socket PATH]"

// pluginSocket returns the --socket flag's value, or the running plugin's
// socket found under /run/docker/plugins.
func pluginSocket(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	return plugin.FindSocket()
}

// runForget is `grapevine forget HOST…`: the running plugin removes hosts
// gone for good from the cluster's known hosts (docs/cluster.md).
func runForget(args []string) int {
	fs := flag.NewFlagSet("forget", flag.ContinueOnError)
	socketFlag := fs.String("socket", "", "plugin socket (default: the one under /run/docker/plugins)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "grapevine forget: name the hosts to forget (their node names, as `grapevine status` lists them)")
		return 2
	}
	socket, err := pluginSocket(*socketFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine forget:", err)
		return 1
	}
	out, err := plugin.Forget(context.Background(), socket, fs.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine forget:", err)
		return 1
	}
	fmt.Println(out)
	return 0
}

// rotateKey runs `grapevine rotate-key`: the plugin replaces this host's
// WireGuard key (docs/encryption.md) and the new public key is printed.
func rotateKey(args []string) int {
	fs := flag.NewFlagSet("rotate-key", flag.ContinueOnError)
	socketFlag := fs.String("socket", "", "plugin socket (default: the one under /run/docker/plugins)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	socket, err := pluginSocket(*socketFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine rotate-key:", err)
		return 1
	}
	raw, err := plugin.RotateKey(context.Background(), socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine rotate-key:", err)
		return 1
	}
	var k plugin.RotatedKey
	if err := json.Unmarshal(raw, &k); err != nil || k.PublicKey == "" {
		fmt.Fprintf(os.Stderr, "grapevine rotate-key: unexpected answer %q\n", raw)
		return 1
	}
	fmt.Println("new WireGuard public key:", k.PublicKey)
	return 0
}

// doctor runs `grapevine doctor [HOST]`: exit status 0 when no check
// failed, 1 when one did or the plugin could not be asked, 2 on bad usage.
func doctor(args []string) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	socketFlag := fs.String("socket", "", "plugin socket (default: the one under /run/docker/plugins)")
	asJSON := fs.Bool("json", false, "print the report as JSON (docs/doctor.md)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	host := ""
	if fs.NArg() > 0 { // flags may follow HOST
		host = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "grapevine doctor: at most one HOST (a member's node name, host name or address)")
		return 2
	}
	socket, err := pluginSocket(*socketFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine doctor:", err)
		return 1
	}
	r, err := plugin.QueryDoctor(context.Background(), socket, host)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine doctor:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = plugin.WriteDoctorText(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grapevine doctor:", err)
		return 1
	}
	if r.Failed() {
		return 1
	}
	return 0
}
