package e2e

import "testing"

// TestParsePing: lost probes are counted from the summary, the longest run
// of missing replies from the sequence numbers (in the middle and at the
// end), duplicates neither hide nor invent a gap, and output without a summary or with
// too few probes is an error, never a clean result.
func TestParsePing(t *testing.T) {
	reply := func(seq string) string { return "64 bytes from 198.19.57.3: seq=" + seq + " ttl=64 time=0.1 ms\n" }
	summary := func(sent, recv string) string {
		return "--- 198.19.57.3 ping statistics ---\n" + sent + " packets transmitted, " + recv + " packets received, 0% packet loss\n"
	}
	tests := []struct {
		name string
		out  string
		want pingResult
		err  bool
	}{
		{"all answered", reply("0") + reply("1") + reply("2") + summary("3", "3"), pingResult{3, 3, 0}, false},
		{"gap in the middle", reply("0") + reply("4") + reply("5") + summary("6", "3"), pingResult{6, 3, 3}, false},
		{"gap at the start", reply("2") + reply("3") + summary("4", "2"), pingResult{4, 2, 2}, false},
		{"gap at the end", reply("0") + reply("1") + summary("7", "2"), pingResult{7, 2, 5}, false},
		{"duplicate does not hide a gap", reply("0") + reply("0") + reply("3") + summary("4", "3"), pingResult{4, 3, 2}, false},
		{"late duplicate invents no gap", reply("0") + reply("1") + reply("2") + reply("1") + reply("3") + summary("4", "4"), pingResult{4, 4, 0}, false},
		{"nothing answered", summary("5", "0"), pingResult{5, 0, 5}, false},
		{"no summary", reply("0") + reply("1"), pingResult{}, true},
		{"too few probes", reply("0") + summary("1", "1"), pingResult{1, 1, 0}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePing(tt.out)
			if (err != nil) != tt.err {
				t.Fatalf("parsePing error %v, want error %v", err, tt.err)
			}
			if !tt.err && got != tt.want {
				t.Fatalf("parsePing = %+v, want %+v", got, tt.want)
			}
		})
	}
}
