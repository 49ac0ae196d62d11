package file

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/backends"
)

// servicesKey is the reserved top-level key that holds service instances.
const servicesKey = "_services"

// snapshot is everything the files held at one revision.
type snapshot struct {
	rev   uint64
	kv    map[string]string
	svcs  map[string][]backends.Service
	names []backends.ServiceSummary
}

type fileData struct {
	path string
	data []byte
}

// listFiles returns the files the backend path designates: the path itself, or the
// *.yaml, *.yml and *.json files of a directory in lexical order. Hidden files are
// skipped: editors keep lock files and swap files there (emacs' .#data.yaml is even a
// dangling symlink).
//
// With a filter (confd's -filter), a directory is walked recursively instead and every
// regular file whose name matches the glob is read, whatever its extension (as confd
// does); hidden files and directories are still skipped.
func listFiles(path, filter string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	if filter != "" {
		return walkFiles(path, filter)
	}
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		p := filepath.Join(path, name)
		// Follow symlinks (Kubernetes ConfigMap volumes are made of them) but skip
		// directories that happen to be named *.yaml.
		if fi, err := os.Stat(p); err != nil {
			return nil, err
		} else if !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

func walkFiles(root, filter string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if ok, _ := filepath.Match(filter, d.Name()); !ok {
			return nil
		}
		if fi, err := os.Stat(p); err != nil {
			return err
		} else if fi.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// subdirs lists root and every directory below it, hidden ones excepted: what a
// recursive read depends on.
func subdirs(root string) []string {
	var out []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		out = append(out, p)
		return nil
	})
	return out
}

func readFiles(paths []string) ([]fileData, error) {
	out := make([]fileData, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fileData{p, b})
	}
	return out, nil
}

// conflictError names both places that define the same thing, so it needs no file
// prefix of its own.
type conflictError struct{ err error }

func (e *conflictError) Error() string { return e.err.Error() }
func (e *conflictError) Unwrap() error { return e.err }

type kvEntry struct {
	value string
	file  string
	line  int
}

type svcEntry struct {
	svc  backends.Service
	file string
	line int
}

// builder merges the files into one key space and one service catalog, refusing a key
// or service instance that two places define.
type builder struct {
	kv   map[string]kvEntry
	svcs map[string][]svcEntry
	// size is the bytes of the keys made so far and of their values: YAML aliases
	// repeat whole subtrees under ever longer keys, so a small file within maxNodes can
	// still flatten to gigabytes.
	size int
}

// maxFlatBytes bounds the flattened size of the data (keys and values, in bytes, over
// every file), far above real configuration data and far below what would hurt herald.
const maxFlatBytes = 128 << 20

// grow counts n more bytes of flattened data.
func (b *builder) grow(n, line int) error {
	if b.size += n; b.size > maxFlatBytes {
		return errAt(line, "keys and values take more than %d bytes once flattened (aliases repeating long keys?)", maxFlatBytes)
	}
	return nil
}

// parseFiles turns file contents into a snapshot (without a revision).
func parseFiles(files []fileData) (*snapshot, error) {
	b := &builder{kv: make(map[string]kvEntry), svcs: make(map[string][]svcEntry)}
	for _, f := range files {
		if err := b.addFile(f); err != nil {
			return nil, err
		}
	}
	snap := &snapshot{
		kv:   make(map[string]string, len(b.kv)),
		svcs: make(map[string][]backends.Service, len(b.svcs)),
	}
	for k, e := range b.kv {
		snap.kv[k] = e.value
	}
	for name, list := range b.svcs {
		svcs := make([]backends.Service, 0, len(list))
		for _, e := range list {
			svcs = append(svcs, e.svc)
		}
		backends.SortServices(svcs)
		snap.svcs[name] = svcs
	}
	snap.names = backends.ServiceSummaries(snap.svcs)
	return snap, nil
}

func (b *builder) addFile(f fileData) error {
	if len(bytes.TrimSpace(f.data)) == 0 {
		// A file caught between truncation and write by a non-atomic save reads as
		// empty; taking that for "no keys" would empty every rendered file.
		return fmt.Errorf("%s: file is empty", f.path)
	}
	var docs []*node
	var err error
	if strings.EqualFold(filepath.Ext(f.path), ".json") {
		var n *node
		n, err = parseJSON(f.data)
		docs = []*node{n}
	} else {
		docs, err = parseYAML(f.data)
	}
	if err != nil {
		return fileError(f.path, err)
	}
	for _, doc := range docs {
		if err := b.addDoc(doc, f.path); err != nil {
			return fileError(f.path, err)
		}
	}
	return nil
}

// fileError names the file and, when known, the line: "data.yaml:12: ...".
func fileError(file string, err error) error {
	var ce *conflictError
	if errors.As(err, &ce) {
		return err
	}
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %w", file, le.line, le.err)
	}
	if line, msg, ok := yamlErrorLine(err.Error()); ok {
		return fmt.Errorf("%s:%d: %s", file, line, msg)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// yamlErrorLine reads yaml.v3's "yaml: line N: msg". yaml.v3 reports parser errors
// (unlike scanner errors) with the 0-based line of the construct that failed, so those
// are shifted to count from 1 like everything else.
func yamlErrorLine(s string) (int, string, bool) {
	rest, ok := strings.CutPrefix(s, "yaml: ")
	if !ok {
		return 0, "", false
	}
	line := 0
	msg := rest
	if r, ok := strings.CutPrefix(rest, "line "); ok {
		num, m, ok := strings.Cut(r, ": ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			return 0, "", false
		}
		line, msg = n, m
	}
	switch {
	case strings.HasPrefix(msg, "did not find expected"),
		msg == "found undefined tag handle",
		msg == "found duplicate %YAML directive",
		msg == "found incompatible YAML document",
		msg == "found duplicate %TAG directive":
		line++
	}
	if line == 0 {
		return 0, "", false
	}
	return line, msg, true
}

func (b *builder) addDoc(doc *node, file string) error {
	switch {
	case doc.kind == scalarNode && doc.tag == "null":
		return nil // empty document: comments only, or "---"
	case doc.kind != mapNode:
		return errAt(doc.line, "the top level must be a mapping of keys to values")
	}
	for i, k := range doc.keys {
		v := doc.vals[i]
		if k == servicesKey {
			if err := b.addServices(v, file); err != nil {
				return err
			}
			continue
		}
		key, err := joinKey("/", k, v.line)
		if err != nil {
			return err
		}
		if err := b.flatten(v, key, file); err != nil {
			return err
		}
	}
	return nil
}

// joinKey appends a mapping key to a key path. A key may itself hold slashes ("a/b: 1"
// is /a/b), but not "." or "..", which would silently move it elsewhere.
func joinKey(parent, k string, line int) (string, error) {
	for _, seg := range strings.Split(k, "/") {
		if seg == "." || seg == ".." {
			return "", errAt(line, "key %q: \".\" and \"..\" are not allowed in keys", k)
		}
	}
	return backends.CleanKey(parent + "/" + k), nil
}

func (b *builder) flatten(n *node, key, file string) error {
	switch n.kind {
	case mapNode:
		for i, k := range n.keys {
			child, err := joinKey(key, k, n.vals[i].line)
			if err != nil {
				return err
			}
			if err := b.grow(len(child), n.vals[i].line); err != nil {
				return err
			}
			if err := b.flatten(n.vals[i], child, file); err != nil {
				return err
			}
		}
	case listNode:
		for i, v := range n.vals {
			child := backends.CleanKey(key + "/" + strconv.Itoa(i))
			if err := b.grow(len(child), v.line); err != nil {
				return err
			}
			if err := b.flatten(v, child, file); err != nil {
				return err
			}
		}
	default:
		// null, ~ and an empty value are absent, as in confd (its YAML decoder gives nil,
		// which it skips): exists is false and getv KEY DEFAULT gives the default.
		if isNull(n) {
			return nil
		}
		if err := b.grow(len(n.value), n.line); err != nil {
			return err
		}
		if prev, ok := b.kv[key]; ok {
			if prev.file == file {
				return errAt(n.line, "key %s is already defined at line %d", key, prev.line)
			}
			return &conflictError{fmt.Errorf("key %s is defined in both %s:%d and %s:%d", key, prev.file, prev.line, file, n.line)}
		}
		b.kv[key] = kvEntry{n.value, file, n.line}
	}
	return nil
}

func isNull(n *node) bool { return n.kind == scalarNode && n.tag == "null" }

func (b *builder) addServices(n *node, file string) error {
	if isNull(n) {
		return nil
	}
	if n.kind != mapNode {
		return errAt(n.line, "%s must map service names to lists of instances", servicesKey)
	}
	for i, name := range n.keys {
		v := n.vals[i]
		if name == "" || strings.Contains(name, "/") {
			return errAt(v.line, "%s: service name %q must be non-empty and hold no \"/\"", servicesKey, name)
		}
		if _, ok := b.svcs[name]; !ok {
			b.svcs[name] = nil // declared, possibly with no instances
		}
		if isNull(v) {
			continue
		}
		if v.kind != listNode {
			return errAt(v.line, "%s.%s: want a list of instances", servicesKey, name)
		}
		for j, item := range v.vals {
			where := fmt.Sprintf("%s.%s[%d]", servicesKey, name, j)
			svc, err := instance(name, item, where)
			if err != nil {
				return err
			}
			// The file, not file:line: moving an entry within its file must not look
			// like a change of the service list.
			svc.Key = file
			for _, prev := range b.svcs[name] {
				if prev.svc.ID == svc.ID {
					return &conflictError{fmt.Errorf("%s: instance ID %q is defined in both %s:%d and %s:%d", where, svc.ID, prev.file, prev.line, file, item.line)}
				}
			}
			b.svcs[name] = append(b.svcs[name], svcEntry{svc, file, item.line})
		}
	}
	return nil
}

// instance reads one entry of _services.
func instance(name string, n *node, where string) (backends.Service, error) {
	if n.kind != mapNode {
		return backends.Service{}, errAt(n.line, "%s: want a mapping with address, port, tags, meta, status, weight, id", where)
	}
	s := backends.Service{Name: name, Backend: "file", Format: backends.FormatHerald}
	for i, k := range n.keys {
		v := n.vals[i]
		var err error
		switch k {
		case "id":
			s.ID, err = scalar(v)
		case "address":
			s.Address, err = scalar(v)
		case "status":
			s.Status, err = scalar(v)
		case "port":
			s.Port, err = integer(v)
		case "weight":
			s.Weight, err = integer(v)
		case "tags":
			s.Tags, err = scalarList(v)
		case "meta":
			s.Meta, err = scalarMap(v)
		default:
			err = fmt.Errorf("unknown field (want address, port, tags, meta, status, weight or id)")
		}
		if err != nil {
			return s, errAt(v.line, "%s: %s: %w", where, k, err)
		}
	}
	s, err := backends.NormalizeService(s)
	if err != nil {
		return s, errAt(n.line, "%s: %w", where, err)
	}
	if s.ID == "" {
		s.ID = s.HostPort()
	}
	return s, nil
}

func scalar(n *node) (string, error) {
	if n.kind != scalarNode {
		return "", errors.New("want a single value, not a list or mapping")
	}
	return n.value, nil
}

func integer(n *node) (int, error) {
	if n.kind != scalarNode {
		return 0, errors.New("want an integer, not a list or mapping")
	}
	switch n.tag {
	case "null":
		return 0, nil
	case "int", "str":
		if i, err := strconv.Atoi(strings.TrimSpace(n.value)); err == nil {
			return i, nil
		}
	}
	return 0, fmt.Errorf("want an integer, got %q", n.value)
}

func scalarList(n *node) ([]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.kind != listNode {
		return nil, errors.New("want a list")
	}
	out := make([]string, 0, len(n.vals))
	for _, v := range n.vals {
		s, err := scalar(v)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func scalarMap(n *node) (map[string]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.kind != mapNode {
		return nil, errors.New("want a mapping")
	}
	out := make(map[string]string, len(n.keys))
	for i, k := range n.keys {
		s, err := scalar(n.vals[i])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", k, err)
		}
		out[k] = s
	}
	return out, nil
}
