package integration

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// consulDig asks the agent's DNS interface for name's SRV records with the real `dig`
// (dnsutils) and returns the instances it names as sorted "address:port", each SRV
// target resolved through the A records of the same answer.
func consulDig(t *testing.T, c *harness.Consul, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dig", "@127.0.0.1", "-p", fmt.Sprint(c.DNSPort), name, "SRV",
		"+noall", "+answer", "+additional", "+time=2", "+tries=2").CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", name, err, out) // no dig: provision.sh installs dnsutils
	}
	type srv struct{ port, target string }
	var srvs []srv
	a := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 8 && f[3] == "SRV":
			srvs = append(srvs, srv{f[6], f[7]})
		case len(f) == 5 && f[3] == "A":
			a[f[0]] = f[4]
		}
	}
	var got []string
	for _, s := range srvs {
		addr, ok := a[s.target]
		if !ok {
			t.Fatalf("dig %s: SRV target %s has no A record in the answer:\n%s", name, s.target, out)
		}
		got = append(got, addr+":"+s.port)
	}
	slices.Sort(got)
	return got
}

// consulWaitDig polls dig until it lists exactly want; it returns when it did.
func consulWaitDig(t *testing.T, c *harness.Consul, name string, want []string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := consulDig(t, c, name)
		if slices.Equal(got, want) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("dig %s SRV = %v after %v, want %v", name, got, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRegisterConsulDNS: what `herald register` announces on Consul is read by Consul's
// DNS interface as a DNS client (dig) sees it: SRV records with the instance's address
// and port, by service name and by tag; an instance deregistered on SIGTERM leaves at
// once, and one whose herald is killed -9 leaves when its TTL check goes critical.
func TestRegisterConsulDNS(t *testing.T) {
	c := harness.StartConsul(t, harness.ConsulDNS())
	s := regServer{"consul", "consul://" + c.Addr, c.Proc}
	a := regRegister(t, s, "--service", "web", "--address", "10.1.0.1", "--port", "8080", "--tag", "blue")
	b := regRegister(t, s, "--service", "web", "--address", "10.1.0.2", "--port", "9090", "--tag", "green")
	registered := time.Now()
	both := []string{"10.1.0.1:8080", "10.1.0.2:9090"}
	seen := consulWaitDig(t, c, "web.service.consul", both, 20*time.Second).Sub(registered)
	if got := consulDig(t, c, "blue.web.service.consul"); !slices.Equal(got, []string{"10.1.0.1:8080"}) {
		t.Fatalf("dig blue.web.service.consul SRV = %v, want the instance tagged blue", got)
	}

	sent := time.Now()
	if code := a.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, a.Output())
	}
	termGone := consulWaitDig(t, c, "web.service.consul", []string{"10.1.0.2:9090"}, 5*time.Second).Sub(sent)
	if termGone > 3*time.Second {
		t.Fatalf("deregistered instance still in DNS %v after SIGTERM; want a deregistration, not an expiry", termGone)
	}

	killed := time.Now()
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killGone := consulWaitDig(t, c, "web.service.consul", nil, 30*time.Second).Sub(killed)
	if killGone > 13*time.Second {
		t.Fatalf("killed instance still in DNS %v after kill -9; want about the 10s TTL", killGone)
	}
	t.Logf("FIGURE consul DNS: register -> both instances in dig SRV %v; SIGTERM -> gone from DNS %v; kill -9 -> gone from DNS %v (TTL 10s)",
		seen.Round(time.Millisecond), termGone.Round(time.Millisecond), killGone.Round(time.Millisecond))
}
