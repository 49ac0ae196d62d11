package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/heraldhq/herald/backends"
)

// Config is one instance to announce as the user wrote it: the flags of `herald
// register` or one [[register]] table of herald.toml (its keys are the toml tags).
type Config struct {
	Service         string            `toml:"service"`
	ID              string            `toml:"id"`
	Address         string            `toml:"address"`
	Port            int               `toml:"port"`
	Tags            []string          `toml:"tags"`
	Meta            map[string]string `toml:"meta"`
	TTL             string            `toml:"ttl"`
	Check           string            `toml:"check"`
	CheckCmd        string            `toml:"check_cmd"`
	CheckInterval   string            `toml:"check_interval"`
	CheckTimeout    string            `toml:"check_timeout"`
	CheckRise       int               `toml:"check_rise"`
	CheckFall       int               `toml:"check_fall"`
	DeregisterAfter string            `toml:"deregister_after"`
	Replace         bool              `toml:"replace"`
	Format          string            `toml:"format"`
}

// Options validates c, before any backend is contacted, and returns the Announcer's
// Options; For then adds what the backend's policy decides. name spells a field in
// errors ("--check-interval" for a flag, "check_interval" for herald.toml);
// attemptTimeout bounds each registry call.
func (c Config) Options(name func(field string) string, attemptTimeout time.Duration, log *slog.Logger) (Options, error) {
	var errs []error
	dur := func(field, v string, def time.Duration) time.Duration {
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s %q: want a positive duration such as 10s", name(field), v))
			return def
		}
		return d
	}
	ttl := dur("ttl", c.TTL, DefaultTTL)
	interval := dur("check_interval", c.CheckInterval, DefaultCheckInterval)
	timeout := dur("check_timeout", c.CheckTimeout, DefaultCheckTimeout)
	deregAfter := dur("deregister_after", c.DeregisterAfter, DefaultDeregisterAfter)
	if c.Service == "" {
		errs = append(errs, fmt.Errorf("%s: missing", name("service")))
	}
	if c.Address == "" {
		errs = append(errs, fmt.Errorf("%s: missing (the address clients should dial)", name("address")))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("%s %d: want 1-65535", name("port"), c.Port))
	}
	if c.CheckRise < 0 || c.CheckFall < 0 {
		errs = append(errs, fmt.Errorf("%s and %s: want a positive count", name("check_rise"), name("check_fall")))
	}
	if c.Check != "" && c.CheckCmd != "" {
		errs = append(errs, fmt.Errorf("%s and %s: give one or the other", name("check"), name("check_cmd")))
	}
	if !slices.Contains(append(backends.RegisterFormats, ""), c.Format) {
		errs = append(errs, fmt.Errorf("%s %q: want herald, hostport or curator", name("format"), c.Format))
	}
	id := c.ID
	if id == "" {
		id = DefaultID(c.Service, c.Address, c.Port)
	}
	o := Options{
		Service: backends.Service{
			Name: c.Service, ID: id, Address: c.Address, Port: c.Port,
			Tags: c.Tags, Meta: c.Meta, Status: backends.StatusPassing,
		},
		// DeregisterAfter only means something to Consul; the others ignore it.
		Register:       backends.RegisterOptions{TTL: ttl, Replace: c.Replace, Format: c.Format, DeregisterAfter: deregAfter},
		CheckInterval:  interval,
		CheckTimeout:   timeout,
		Rise:           c.CheckRise,
		Fall:           c.CheckFall,
		AttemptTimeout: attemptTimeout,
		Log:            log,
	}
	switch {
	case c.CheckCmd != "":
		o.Check = CommandCheck(c.CheckCmd)
	case c.Check != "":
		chk, err := ParseCheck(c.Check)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name("check"), err))
			break
		}
		o.Check = chk
	}
	return o, errors.Join(errs...)
}

// For returns o completed with what r's backend declares (backends.RegisterPolicy):
// whether the registry runs an HTTP or TCP check itself (then herald does not), how long
// an ID refused as taken is waited for, and whether the entry holding it is abandoned.
// A registrar without a policy leaves o as it is.
func (o Options) For(r backends.Registrar) Options {
	p, ok := r.(backends.RegisterPolicy)
	if !ok {
		return o
	}
	if p.RunsChecks() {
		switch c := o.Check.(type) {
		case HTTPCheck:
			o.Register.CheckHTTP, o.Check = string(c), nil
			o.Register.CheckInterval, o.Register.CheckTimeout = o.CheckInterval, o.CheckTimeout
		case TCPCheck:
			o.Register.CheckTCP, o.Check = string(c), nil
			o.Register.CheckInterval, o.Register.CheckTimeout = o.CheckInterval, o.CheckTimeout
		}
	}
	o.IsTaken = func(err error) bool { return errors.Is(err, backends.ErrTaken) }
	o.ClaimWait = p.ClaimWait(o.Register)
	svc, reg := o.Service, o.Register
	o.Abandoned = func(ctx context.Context) (bool, error) { return p.Abandoned(ctx, svc, reg) }
	return o
}
