package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/consul"
	"github.com/heraldhq/herald/backends/etcd"
	"github.com/heraldhq/herald/backends/register"
	"github.com/heraldhq/herald/backends/zookeeper"
)

// RegisterConfig is one [[register]] table of herald.toml: an instance that `herald
// watch` (or `herald register` without --service) announces while it runs. Same fields
// as `herald register` flags.
type RegisterConfig struct {
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

// claimMargin is added to a dead holder's lease or session length before a refused ID
// is reported as taken: etcd expires leases on a 500 ms tick, ZooKeeper sessions on its
// tick, and the keepalive that renewed it may have been the last thing the holder did.
const claimMargin = 3 * time.Second

// registerSpec is one validated registration: what to announce and how.
type registerSpec struct {
	where string // "herald register" or "herald.toml [[register]] #2", for errors
	opts  register.Options
	// consulTTL: on Consul with herald's TTL check, an entry left critical by a dead
	// herald may be taken over (see abandonedOn).
	consulTTL bool
}

// abandonedOn reports whether every instance of svc's ID that store lists is critical:
// on Consul with herald's TTL check, the entry of a herald that died without
// deregistering. A live herald keeps it passing (or critical only while its own health
// check fails, which a second herald checking the same instance would see too).
func abandonedOn(store backends.Store, svc backends.Service) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		q := backends.ServiceQuery{Name: svc.Name, Statuses: []string{
			backends.StatusPassing, backends.StatusWarning, backends.StatusCritical, backends.StatusMaintenance}}
		list, _, err := store.Services(ctx, q)
		if err != nil {
			return false, err
		}
		found := false
		for _, s := range list {
			if s.ID == svc.ID {
				if s.Status != backends.StatusCritical {
					return false, nil
				}
				found = true
			}
		}
		return found, nil
	}
}

// spec validates rc for a backend of the given scheme. flagNames selects how fields are
// named in errors: "--check-interval" for flags, "check_interval" for herald.toml.
func (rc RegisterConfig) spec(where, scheme string, flagNames bool, o *Options, log *slog.Logger) (registerSpec, error) {
	name := func(field string) string {
		if flagNames {
			return "--" + strings.ReplaceAll(field, "_", "-")
		}
		return field
	}
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
	ttl := dur("ttl", rc.TTL, register.DefaultTTL)
	interval := dur("check_interval", rc.CheckInterval, register.DefaultCheckInterval)
	timeout := dur("check_timeout", rc.CheckTimeout, register.DefaultCheckTimeout)
	deregAfter := dur("deregister_after", rc.DeregisterAfter, register.DefaultDeregisterAfter)
	if rc.Service == "" {
		errs = append(errs, fmt.Errorf("%s: missing", name("service")))
	}
	if rc.Address == "" {
		errs = append(errs, fmt.Errorf("%s: missing (the address clients should dial)", name("address")))
	}
	if rc.Port < 1 || rc.Port > 65535 {
		errs = append(errs, fmt.Errorf("%s %d: want 1-65535", name("port"), rc.Port))
	}
	if rc.CheckRise < 0 || rc.CheckFall < 0 {
		errs = append(errs, fmt.Errorf("%s and %s: want a positive count", name("check_rise"), name("check_fall")))
	}
	if rc.Check != "" && rc.CheckCmd != "" {
		errs = append(errs, fmt.Errorf("%s and %s: give one or the other", name("check"), name("check_cmd")))
	}
	if !slices.Contains(append(backends.RegisterFormats, ""), rc.Format) {
		errs = append(errs, fmt.Errorf("%s %q: want herald, hostport or curator", name("format"), rc.Format))
	}
	id := rc.ID
	if id == "" {
		id = register.DefaultID(rc.Service, rc.Address, rc.Port)
	}
	opts := register.Options{
		Service: backends.Service{
			Name: rc.Service, ID: id, Address: rc.Address, Port: rc.Port,
			Tags: rc.Tags, Meta: rc.Meta, Status: backends.StatusPassing,
		},
		Register:       backends.RegisterOptions{TTL: ttl, Replace: rc.Replace, Format: rc.Format},
		CheckInterval:  interval,
		CheckTimeout:   timeout,
		Rise:           rc.CheckRise,
		Fall:           rc.CheckFall,
		AttemptTimeout: o.Timeout,
		IsTaken:        idTaken,
		Log:            log,
	}
	switch {
	case rc.CheckCmd != "":
		opts.Check = register.CommandCheck(rc.CheckCmd)
	case rc.Check != "":
		c, err := register.ParseCheck(rc.Check)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name("check"), err))
			break
		}
		if scheme == "consul" {
			// Consul runs HTTP and TCP checks itself, from the agent.
			switch c := c.(type) {
			case register.HTTPCheck:
				opts.Register.CheckHTTP = string(c)
			case register.TCPCheck:
				opts.Register.CheckTCP = string(c)
			}
			opts.Register.CheckInterval, opts.Register.CheckTimeout = interval, timeout
		} else {
			opts.Check = c
		}
	}
	consulTTL := false
	switch scheme {
	case "consul":
		opts.Register.DeregisterAfter = deregAfter
		// The agent keeps a killed herald's service until DeregisterAfter. With herald's
		// TTL check, the entry turns critical one TTL after its herald died, and is
		// taken over then (see abandonedOn). A check that Consul runs itself says
		// nothing about the herald that registered it: a duplicate is refused at once.
		consulTTL = opts.Register.CheckHTTP == "" && opts.Register.CheckTCP == ""
		if consulTTL {
			opts.ClaimWait = ttl + claimMargin
		}
	case "zookeeper":
		opts.ClaimWait = o.SessionTimeout + claimMargin
	default:
		opts.ClaimWait = ttl + claimMargin
	}
	if err := errors.Join(errs...); err != nil {
		return registerSpec{}, fmt.Errorf("%s: %w", where, err)
	}
	return registerSpec{where: where, opts: opts, consulTTL: consulTTL}, nil
}

// idTaken reports the backends' "this ID belongs to another process" refusals.
func idTaken(err error) bool {
	return errors.Is(err, etcd.ErrTaken) || errors.Is(err, zookeeper.ErrTaken) || errors.Is(err, consul.ErrRegistered)
}
