package announce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/internal/shell"
)

// Check is a local health check of the instance being announced. Check returns nil when
// the instance is healthy; ctx carries the check's timeout.
type Check interface {
	Check(ctx context.Context) error
	// String describes the check for logs and Consul check notes, never with secrets.
	String() string
}

// ParseCheck reads a --check value: http://host:port/path or https://... (passes on a
// 2xx or 3xx answer; redirects are not followed) or tcp://host:port (passes when a TCP
// connection is accepted).
func ParseCheck(spec string) (Check, error) {
	u, err := url.Parse(spec)
	if err != nil {
		// url.Parse's error quotes the URL and the piece it choked on, which may be
		// part of a password.
		return nil, fmt.Errorf("health check %q: not a valid URL", backends.Redact(spec))
	}
	// An '@' left outside the userinfo means a password with '/', '?' or '#' in it
	// was cut short, and its rest would show as host or path in errors.
	if strings.Contains(u.Host+u.Path+u.RawQuery+u.Fragment, "@") {
		return nil, fmt.Errorf("health check %s: '@' outside user:password@ (percent-encode the password: %%2F for '/', %%40 for '@')", backends.Redact(spec))
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("health check %s: no host", backends.Redact(u.String()))
		}
		return HTTPCheck(u.String()), nil
	case "tcp":
		if _, _, err := net.SplitHostPort(u.Host); err != nil || u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("health check %s: want tcp://host:port", backends.Redact(u.String()))
		}
		return TCPCheck(u.Host), nil
	default:
		return nil, fmt.Errorf("health check %s: want http://, https:// or tcp:// (use --check-cmd for a command)", backends.Redact(spec))
	}
}

// HTTPCheck passes when a GET of url answers 2xx or 3xx.
type HTTPCheck string

func (c HTTPCheck) String() string {
	u, err := url.Parse(string(c))
	if err != nil {
		return "http check"
	}
	return backends.Redact(u.String())
}

// Check makes one GET on a fresh connection, so that a server whose accept loop hangs
// fails even when an old keep-alive connection would still be served.
func (c HTTPCheck) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, string(c), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	req.Header.Set("User-Agent", "herald-register")
	cl := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// A 3xx passes as it is: following it could check another server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := cl.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", c, unwrapURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("%s: HTTP %s", c, resp.Status)
	}
	return nil
}

// unwrapURLError drops url.Error's repetition of the method and URL (which may carry
// credentials); the caller names the check.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// TCPCheck passes when host:port accepts a TCP connection.
type TCPCheck string

func (c TCPCheck) String() string { return "tcp://" + string(c) }

func (c TCPCheck) Check(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", string(c))
	if err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	conn.Close()
	return nil
}

// CommandCheck passes when `/bin/sh -c` of the command exits 0. It runs in its own
// process group, all of which is killed when the check times out.
type CommandCheck string

// String does not show the command: command lines often carry passwords
// (PGPASSWORD=... pg_isready).
func (c CommandCheck) String() string { return "check command" }

func (c CommandCheck) Check(ctx context.Context) error {
	out := &shell.Tail{Max: tailMax}
	_, err := shell.Run(ctx, string(c), 0, out)
	if ctx.Err() != nil {
		return fmt.Errorf("check command: %w", ctx.Err())
	}
	if err != nil {
		if s := out.String(); s != "" {
			return fmt.Errorf("check command: %w: %s", err, s)
		}
		return fmt.Errorf("check command: %w", err)
	}
	return nil
}

// tailMax is how much of a failed check's output its error quotes.
const tailMax = 256
