package plugin

import (
	"fmt"
	"io"
	"strings"
)

// WriteDoctorText prints the report as a checklist: one line per check,
// its fix indented under every warning and failure, and a summary.
func WriteDoctorText(w io.Writer, r Report) error {
	var b strings.Builder
	title := fmt.Sprintf("grapevine doctor on %s", r.Host)
	if r.Node != "" {
		title += fmt.Sprintf(" (node %s)", r.Node)
	}
	if r.Peer != "" {
		title += ", peer " + r.Peer
	}
	b.WriteString(title + "\n")
	counts := map[string]int{}
	for _, c := range r.Checks {
		counts[c.Result]++
		subject := c.Check
		if c.Peer != "" {
			subject += " " + c.Peer
		}
		fmt.Fprintf(&b, "  %-6s %s: %s\n", resultMark(c.Result), subject, c.Detail)
		if c.Fix != "" && (c.Result == ResultFail || c.Result == ResultWarn) {
			fmt.Fprintf(&b, "         fix: %s\n", c.Fix)
		}
	}
	fmt.Fprintf(&b, "%d check(s): %d failed, %d warning(s), %d passed, %d skipped\n",
		len(r.Checks), counts[ResultFail], counts[ResultWarn], counts[ResultPass], counts[ResultSkip])
	_, err := io.WriteString(w, b.String())
	return err
}

func resultMark(result string) string {
	switch result {
	case ResultPass:
		return "ok"
	case ResultFail:
		return "FAIL"
	case ResultWarn:
		return "warn"
	}
	return "skip"
}
