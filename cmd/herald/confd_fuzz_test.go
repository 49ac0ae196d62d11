package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/heraldhq/herald/backends"
)

// FuzzConfdConfigFile feeds confd.toml loader arbitrary files: it must never panic, must
// name the file in every error and warning, and whatever it accepts must translate into
// a herald backend URL that herald itself parses (or a clear error).
func FuzzConfdConfigFile(f *testing.F) {
	for _, seed := range []string{
		"backend = \"etcdv3\"\nnodes = [\"http://127.0.0.1:2379\"]\nprefix = \"/p\"\ninterval = 5\nwatch = true\n",
		"backend = \"file\"\nfile = [\"a.yaml\", \"b/\"]\nfilter = \"*\"\nlog-level = \"debug\"\nnoop = true\n",
		"backend = \"consul\"\nscheme = \"https\"\nnodes = \"c:8500\"\nbasic_auth = true\nusername = \"u\"\npassword = \"p\"\nauth_token = \"t\"\n",
		"[confd]\nconfdir = \"/etc/confd\"\netcd_nodes = [\"http://127.0.0.1:4001\"]\n",
		"backend = \"zookeeper\"\nnodes = [1, 2.5, true]\nsrv_domain = \"\"\nsync-only = true\nkeep_stage_file = true\nclient_cakeys = \"ca\"\n",
		"interval = \"x\"\n", "nodes = [[1]]\n", "backend = \"vault\"\ntable = \"t\"\n", "a = {b = 1}\n", "nodes = [\"X::\"]\n",
	} {
		f.Add([]byte(seed))
	}
	const path = "/fuzz/confd.toml"
	f.Fuzz(func(t *testing.T, raw []byte) {
		c := &confdConfig{}
		fs := c.flags()
		warnings, err := applyConfdTOML(fs, map[string]bool{}, path, raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, w := range warnings {
			if !strings.HasPrefix(w, path+":") {
				t.Fatalf("warning does not name the file: %q", w)
			}
		}
		noSRV := func(context.Context, string) ([]*net.SRV, error) { return nil, errors.New("no DNS") }
		p, err := c.translate(context.Background(), noSRV)
		if err != nil {
			return
		}
		if p.command != "render" && p.command != "watch" {
			t.Fatalf("command %q", p.command)
		}
		u := optionMap(p)["backend"]
		if _, err := backends.ParseURL(u); err != nil {
			t.Fatalf("translated into a backend herald refuses: %q: %v", u, err)
		}
	})
}
