package template

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// sprig's until, untilStep and repeat are bounded like seq: a corrupt value must not
// exhaust memory.
func TestListFunctionsAreBounded(t *testing.T) {
	for text, want := range map[string]string{
		`{{len (until 2000000)}}`:            "until 2000000: more than 1048576 numbers",
		`{{len (until -2000000)}}`:           "until -2000000: more than 1048576 numbers",
		`{{len (untilStep 0 2000000000 1)}}`: "untilStep 0 2000000000 1: more than 1048576 numbers",
		`{{len (repeat 2000000 "x")}}`:       "repeat 2000000: more than 1048576 copies",
		`{{len (repeat 1000000 "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345")}}`: "more than 1048576 copies or 268435456 bytes",
	} {
		tm, err := Parse("t", text)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := tm.Execute(MapSource{}, Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", text, err, want)
		}
	}
	for text, want := range map[string]string{
		`{{until 3}}`:             "[0 1 2]",
		`{{until -2}}`:            "[0 -1]",
		`{{untilStep 0 10 4}}`:    "[0 4 8]",
		`{{untilStep 10 0 -4}}`:   "[10 6 2]",
		`{{untilStep 0 10 0}}`:    "[]",
		`{{repeat 3 "ab"}}`:       "ababab",
		`{{len (until 1048576)}}`: "1048576",
	} {
		tm, err := Parse("t", text)
		if err != nil {
			t.Fatal(err)
		}
		if out, _, err := tm.Execute(MapSource{}, Options{}); err != nil || string(out) != want {
			t.Errorf("%s = %q, %v; want %q", text, out, err, want)
		}
	}
}

// A render's context stops a loop that writes output or calls a list-making function,
// with the context's cause.
func TestRenderStopsWithItsContext(t *testing.T) {
	cause := errors.New("render took longer than render_timeout 100ms")
	for _, text := range []string{
		`{{range seq 1 1000000}}{{range seq 1 1000000}}{{end}}{{end}}`,
		`{{range until 1000000}}{{range until 1000000}}{{end}}{{end}}`,
		`{{$l := seq 1 1000000}}{{range $l}}{{range $l}}x{{end}}{{end}}`,
		`{{range seq 1 1000000}}{{range seq 1 1000000}}{{getv "/a" ""}}{{end}}{{end}}`,
	} {
		tm, err := Parse("t", text)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeoutCause(context.Background(), 100*time.Millisecond, cause)
		start := time.Now()
		_, _, err = tm.Execute(MapSource{}, Options{Context: ctx})
		cancel()
		if !errors.Is(err, cause) || time.Since(start) > 5*time.Second {
			t.Errorf("%s: err = %v after %v, want %v soon after 100ms", text, err, time.Since(start), cause)
		}
	}
}
