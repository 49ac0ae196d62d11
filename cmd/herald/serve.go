package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/render"
)

type health struct {
	OK        bool            `json:"ok"`
	Backend   backendHealth   `json:"backend"`
	Resources []render.Status `json:"resources"`
	// ConfigError is what the last load of the resource files found wrong: the
	// resources it names keep their previous version, which may not be what is on disk.
	ConfigError string `json:"config_error,omitempty"`
}

type backendHealth struct {
	State    string       `json:"state"`
	Endpoint string       `json:"endpoint,omitempty"`
	Error    string       `json:"error,omitempty"`
	Since    time.Time    `json:"since,omitzero"`
	Parts    []partHealth `json:"parts,omitempty"`
}

// partHealth is one part of the backend (a Consul agent address, a datacenter) that can
// fail while the backend is up through the others.
type partHealth struct {
	Name  string    `json:"name"`
	Up    bool      `json:"up"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

func newBackendHealth(st backends.State) backendHealth {
	h := backendHealth{State: st.Conn.String(), Endpoint: st.Endpoint, Since: st.Since}
	if st.Err != nil {
		h.Error = st.Err.Error()
	}
	for _, p := range st.Parts {
		ph := partHealth{Name: p.Name, Up: p.Up, Since: p.Since}
		if p.Err != nil {
			ph.Error = p.Err.Error()
		}
		h.Parts = append(h.Parts, ph)
	}
	return h
}

// partsCollector exports herald_backend_part_up{part="..."} from the backend's state at
// each scrape: the parts are known only as the backend meets them.
type partsCollector struct {
	store backends.Store
	desc  *prometheus.Desc
}

func newPartsCollector(store backends.Store) *partsCollector {
	return &partsCollector{store: store, desc: prometheus.NewDesc("herald_backend_part_up",
		"1 when this part of the backend (a Consul agent, a datacenter) answers.", []string{"part"}, nil)}
}

func (c *partsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *partsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.store.State().Parts {
		v := 0.0
		if p.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, p.Name)
	}
}

// serve exposes /healthz (200 only when the backend is up and every resource rendered at
// least once) and /metrics. It returns a function that shuts the server down.
func serve(addr string, reg *prometheus.Registry, rn *render.Runner, store backends.Store, profiles bool, log *slog.Logger) (func(), error) {
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_backend_up", Help: "1 when the backend connection is up.",
	}, func() float64 {
		if store.State().Conn == backends.Up {
			return 1
		}
		return 0
	})
	reg.MustRegister(up, newPartsCollector(store), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		st := store.State()
		h := health{Backend: newBackendHealth(st), Resources: rn.Statuses()}
		h.OK = st.Conn == backends.Up
		if err := rn.LoadError(); err != nil {
			h.ConfigError, h.OK = err.Error(), false
		}
		for _, s := range h.Resources {
			h.OK = h.OK && s.Rendered && !s.Behind
		}
		w.Header().Set("Content-Type", "application/json")
		if !h.OK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
	if profiles {
		runtime.MemProfileRate = heapProfileRate // main turned heap sampling off
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return listenHTTP(addr, mux, log, "serving /healthz and /metrics")
}

// idleTimeout closes a keep-alive connection with no request for this long.
const idleTimeout = 10 * time.Second

// isLoopback says whether a listener on a is reachable only from this host.
func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// listenHTTP serves mux on addr (for --listen) and returns a function that shuts the
// server down, waiting at most 2 s for requests in flight.
func listenHTTP(addr string, mux *http.ServeMux, log *slog.Logger, msg string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	if !isLoopback(ln.Addr()) {
		log.Warn("--listen is not a loopback address: anyone who can reach it reads /healthz and /metrics (resource names, dests, errors)", "addr", ln.Addr().String())
	}
	// Bounded reads and idle keep-alive connections: a client that connects and stalls,
	// or keeps connections open, cannot pile them up. No write timeout: /debug/pprof's
	// profiles take as long as asked.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: idleTimeout}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info(msg, "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
