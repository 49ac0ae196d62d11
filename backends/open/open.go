// Package open picks and constructs the backend a --backend URL names. It is the only
// package that imports every backend, so that each backend package stays independent.
package open

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/consul"
	"github.com/heraldhq/herald/backends/env"
	"github.com/heraldhq/herald/backends/etcd"
	"github.com/heraldhq/herald/backends/file"
	"github.com/heraldhq/herald/backends/zookeeper"
)

// Open parses cfg.URL and constructs its backend. Constructors never block on the
// network: a registry that is down shows in State and in the first read, not here. ctx
// is for backends whose setup needs one; none blocks on it.
func Open(ctx context.Context, cfg backends.Config) (backends.Store, error) {
	ep, err := backends.ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	switch ep.Scheme {
	case "file":
		return store(file.New(cfg, ep))
	case "env":
		return store(env.New(cfg, ep, cfg.Environ))
	case "etcd":
		return store(etcd.New(cfg, ep))
	case "zookeeper":
		return store(zookeeper.New(cfg, ep))
	case "consul":
		return store(consul.New(cfg, ep))
	default:
		// ParseURL refuses unknown schemes; this is a scheme it learnt before Open did.
		return nil, fmt.Errorf("backend %s: no backend for scheme %q", ep, ep.Scheme)
	}
}

// store turns a constructor's (*T, error) into (backends.Store, error) without the
// typed-nil trap: a nil *T in a non-nil interface would pass a caller's nil check.
func store[S backends.Store](s S, err error) (backends.Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}
