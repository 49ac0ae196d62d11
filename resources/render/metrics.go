package render

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the runner's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	renders        *prometheus.CounterVec
	renderDuration prometheus.Histogram
	checkFailures  *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	reloadDuration prometheus.Histogram
	lastSuccess    *prometheus.GaugeVec
	keys           prometheus.Gauge
	heldRenders    *prometheus.CounterVec
	removedFiles   *prometheus.CounterVec
}

// NewMetrics registers the runner's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		renders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_renders_total", Help: "Renders by resource and result (changed, unchanged, error).",
		}, []string{"resource", "result"}),
		renderDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_render_duration_seconds", Help: "Time to render, check and write one resource.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_check_failures_total", Help: "check_cmd failures by resource.",
		}, []string{"resource"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_reloads_total", Help: "reload_cmd runs by result (ok, error).",
		}, []string{"result"}),
		reloadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_reload_duration_seconds", Help: "Time a reload_cmd took.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_last_success_timestamp_seconds", Help: "When each resource last rendered successfully.",
		}, []string{"resource"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_cache_keys", Help: "Keys held in the cache.",
		}),
		heldRenders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_renders_held_total", Help: "Renders held back by the empty-drop guard (a service list shrank too far at once), by resource; counted once per hold.",
		}, []string{"resource"}),
		removedFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_fanout_files_removed_total", Help: "Files of a fan-out resource (each) removed because their item left the list, by resource.",
		}, []string{"resource"}),
	}
	reg.MustRegister(m.renders, m.renderDuration, m.checkFailures, m.reloads, m.reloadDuration, m.lastSuccess, m.keys, m.heldRenders, m.removedFiles)
	return m
}

func (m *Metrics) render(resource, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.renders.WithLabelValues(resource, result).Inc()
	m.renderDuration.Observe(d.Seconds())
}

func (m *Metrics) checkFailed(resource string) {
	if m != nil {
		m.checkFailures.WithLabelValues(resource).Inc()
	}
}

func (m *Metrics) reload(err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reloads.WithLabelValues(result).Inc()
	m.reloadDuration.Observe(d.Seconds())
}

func (m *Metrics) success(resource string) {
	if m != nil {
		m.lastSuccess.WithLabelValues(resource).SetToCurrentTime()
	}
}

func (m *Metrics) cacheKeys(n int) {
	if m != nil {
		m.keys.Set(float64(n))
	}
}

func (m *Metrics) held(resource string) {
	if m != nil {
		m.heldRenders.WithLabelValues(resource).Inc()
	}
}

func (m *Metrics) removed(resource string) {
	if m != nil {
		m.removedFiles.WithLabelValues(resource).Inc()
	}
}
