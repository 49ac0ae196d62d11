// Package template renders herald's templates: Go's text/template with sprig, confd's
// whole function catalogue with confd's exact semantics (so an existing confd templates/
// file renders byte for byte as confd renders it), and herald's service functions.
//
// A render reads a Source lazily, key by key and prefix by prefix, never copying it, and
// records what it read (Reads): the runner uses that to load what is missing, to choose
// what to watch, and to re-render only the resources a change touches.
package template

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"text/template"
)

// Options say how one render sees the Source.
type Options struct {
	// Prefix is confd's resource prefix: the template reads "/x" for the absolute key
	// Prefix+"/x", and gets/ls return keys with Prefix stripped. "" or "/" means none.
	Prefix string
	// Scope holds the absolute prefixes the resource declared in `keys` (already joined
	// with Prefix). confd loads only those, so a read outside them behaves as a missing
	// key and is not recorded. nil or empty means unrestricted: keys are inferred from
	// what the template reads.
	Scope []string

	// missingIsEmpty makes a missing key read as "" (or getv's default) instead of an
	// error, so that Check runs past it.
	missingIsEmpty bool

	// Data is the template's dot: nil for confd's resources ({{.}} is "<no value>"), a
	// fan-out item for the files of an `each` resource.
	Data any

	// Context, when set, stops the render once it ends: the execution fails with its
	// cause at the next output, store read or list-making function (see bound.go).
	Context context.Context
}

// Template is a parsed template, ready to render. It is safe for concurrent use.
type Template struct {
	name string // confd names a template after its file's base name
	path string // the file it came from, for errors; "" when parsed from text
	// files are the template's own file and the partial files it calls (Files).
	files []string

	// resolver serves lookupIP and lookupSRV; tests swap it for a fake.
	resolver resolver

	// main is the parsed template bound to its own execution state. Renders of one
	// resource rarely overlap, so one bound copy serves nearly all of them; an overlapping
	// render pays for a clone instead of every render paying for one.
	mu   sync.Mutex
	main *instance

	// lastSize sizes the next output buffer, so a render grows it at most once.
	lastSize atomic.Int64
}

// instance is a text/template whose store functions close over one execution state.
type instance struct {
	tmpl *template.Template
	st   *execState
}

// MaxFileSize bounds a template file: far above any real template, far below what would
// hurt the daemon.
const MaxFileSize = 16 << 20

// ParseFile parses the template in file path. Like confd, the template is named after
// the file's base name, which is what execution errors show with the line.
func ParseFile(path string) (*Template, error) { return (*Partials)(nil).ParseFile(path) }

// Parse parses text as a template called name.
func Parse(name, text string) (*Template, error) { return (*Partials)(nil).Parse(name, text) }

func (p *Partials) parse(name, text string) (*Template, error) {
	t := &Template{name: name, resolver: net.DefaultResolver}
	st := &execState{}
	full := t.funcMap(st)
	tm, err := template.New(name).Funcs(full).Parse(text)
	if err != nil {
		return nil, err
	}
	added, files, err := p.resolve(tm)
	if err != nil {
		return nil, err
	}
	// Parse again with only the functions the text and its partials call: the same
	// template, without a private copy of sprig's whole map (see usedFuncs).
	used := usedFuncs(tm)
	if tm, err = template.New(name).Funcs(trimFuncs(full, used)).Parse(text); err != nil {
		return nil, err
	}
	for n, tree := range added {
		if _, err := tm.AddParseTree(n, tree); err != nil {
			return nil, err
		}
	}
	for _, f := range inPlaceFuncs {
		st.copyLists = st.copyLists || used[f]
	}
	t.main = &instance{tmpl: tm, st: st}
	t.files = files
	return t, nil
}

// Files lists the files the template came from: its own (when parsed from one), then
// the partial files it calls, directly or through another partial. A change to any of
// them changes the template.
func (t *Template) Files() []string { return slices.Clone(t.files) }

// Name is the template's name: the base name of its file for ParseFile.
func (t *Template) Name() string { return t.name }

// label names the template in errors: its file when it has one.
func (t *Template) label() string {
	if t.path != "" {
		return t.path
	}
	return t.name
}

// Execute renders the template against src. It returns what the render read even when
// it fails midway, so that the caller can load missing data and try again.
func (t *Template) Execute(src Source, opts Options) ([]byte, *Reads, error) {
	if src == nil {
		return nil, &Reads{}, fmt.Errorf("render %s: no source", t.label())
	}
	inst := t.main
	if t.mu.TryLock() {
		defer t.mu.Unlock()
	} else {
		var err error
		if inst, err = t.clone(); err != nil {
			return nil, &Reads{}, fmt.Errorf("render %s: %w", t.label(), err)
		}
	}
	inst.st.begin(src, opts)
	var buf bytes.Buffer
	buf.Grow(int(t.lastSize.Load()))
	err := inst.tmpl.Execute(outWriter{&buf, inst.st}, opts.Data)
	reads := inst.st.end()
	if err != nil {
		return nil, reads, fmt.Errorf("render %s: %w", t.label(), err)
	}
	t.lastSize.Store(int64(buf.Len()))
	return buf.Bytes(), reads, nil
}

// clone returns a copy of the template bound to a fresh execution state, for a render
// that overlaps another one.
func (t *Template) clone() (*instance, error) {
	tm, err := t.main.tmpl.Clone()
	if err != nil {
		return nil, err
	}
	st := &execState{copyLists: t.main.st.copyLists}
	tm.Funcs(st.funcs()).Funcs(st.boundedFuncs())
	return &instance{tmpl: tm, st: st}, nil
}
