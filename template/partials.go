package template

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	tparse "text/template/parse"

	"github.com/heraldhq/herald/template/regfile"
)

// PartialsDir is where, below a confdir's templates/, the files whose definitions every
// template can call live. A directory of its own, not all of templates/: a confd
// templates/ holds top-level templates only, often with the same {{define}} names in
// several of them, and those must keep rendering exactly as before.
const PartialsDir = "partials"

// Partials are the named templates of a partials directory: each file's {{define}}s,
// and its body (when not blank) under the file's path relative to the directory. Any
// template parsed with them can {{template "name" .}} one; its own definitions come
// first. A Partials is read-only once loaded and shared by every template.
type Partials struct {
	dir  string
	defs map[string]partial
	err  error
}

type partial struct {
	file string // absolute path, for errors and fingerprints
	tree *tparse.Tree
}

// LoadPartials parses every file below dir (recursively, skipping editor files: names
// starting with "." or "#" or ending with "~"). A missing dir means no partials. Files
// that do not parse, and a name defined in two files, are reported by Err, naming the
// files; the other definitions still load.
func LoadPartials(dir string) *Partials {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	p := &Partials{dir: dir, defs: map[string]partial{}}
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() || editorFile(d.Name()):
			return nil
		}
		files = append(files, path)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return p
	}
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("partials %s: %w", dir, err))
	}
	slices.Sort(files)
	// Parse with every function: which ones a template needs is known only once the
	// partials it calls are added to it (see parseWith).
	full := (&Template{}).funcMap(&execState{})
	for _, f := range files {
		errs = append(errs, p.addFile(f, full))
	}
	p.err = errors.Join(errs...)
	return p
}

func editorFile(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasSuffix(name, "~")
}

// addFile parses one partial file and records its definitions.
func (p *Partials) addFile(file string, funcs template.FuncMap) error {
	text, err := readTemplate(file)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(p.dir, file)
	rel = filepath.ToSlash(rel)
	// The parse name shows in errors as partials/<rel>:LINE, so a failing line inside a
	// partial points at the partial, not at the template that called it.
	tm, err := template.New(PartialsDir + "/" + rel).Funcs(funcs).Parse(text)
	if err != nil {
		return fmt.Errorf("parse partial %s: %w", file, err)
	}
	var errs []error
	for _, t := range tm.Templates() {
		name := t.Name()
		if name == tm.Name() {
			if t.Tree == nil || tparse.IsEmptyTree(t.Tree.Root) {
				continue // a file of {{define}}s only
			}
			name = rel
		}
		if other, dup := p.defs[name]; dup {
			errs = append(errs, fmt.Errorf("partial %q is defined in both %s and %s", name, other.file, file))
			continue
		}
		p.defs[name] = partial{file: file, tree: t.Tree}
	}
	return errors.Join(errs...)
}

// Err reports the partial files that did not load and the names defined twice.
func (p *Partials) Err() error {
	if p == nil {
		return nil
	}
	return p.err
}

// Dir is the directory the partials came from.
func (p *Partials) Dir() string {
	if p == nil {
		return ""
	}
	return p.dir
}

// ParseFile is ParseFile with these partials callable from the template.
func (p *Partials) ParseFile(path string) (*Template, error) {
	text, err := readTemplate(path)
	if err != nil {
		return nil, err
	}
	t, err := p.parse(filepath.Base(path), text)
	if err != nil {
		return nil, fmt.Errorf("parse template %s: %w", path, err)
	}
	t.path = path
	t.files = append([]string{path}, t.files...)
	return t, nil
}

// Parse is Parse with these partials callable from the template.
func (p *Partials) Parse(name, text string) (*Template, error) {
	t, err := p.parse(name, text)
	if err != nil {
		return nil, fmt.Errorf("parse template %s: %w", name, err)
	}
	return t, nil
}

// resolve adds to tm, transitively, the partials its templates call and it does not
// define itself, and returns their trees by name and the files they came from. A name
// found nowhere is left to fail at execution, as text/template does (and confd did):
// a branch never taken may call it. If the partials did not load, a template that calls
// a name it does not define fails instead, since the broken file may be the one; the
// caller reports Err.
func (p *Partials) resolve(tm *template.Template) (map[string]*tparse.Tree, []string, error) {
	var queue []string
	for _, t := range tm.Templates() {
		queue = append(queue, calledNames(t.Tree)...)
	}
	added := map[string]*tparse.Tree{}
	var files []string
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if tm.Lookup(name) != nil {
			continue
		}
		if p == nil {
			continue
		}
		if p.err != nil {
			// Not p.err itself: the caller reports it once, not once per template.
			return nil, nil, fmt.Errorf("calls template %q, but the partials in %s have errors", name, p.dir)
		}
		def, ok := p.defs[name]
		if !ok {
			continue
		}
		if _, err := tm.AddParseTree(name, def.tree); err != nil {
			return nil, nil, fmt.Errorf("partial %q from %s: %w", name, def.file, err)
		}
		added[name] = def.tree
		if !slices.Contains(files, def.file) {
			files = append(files, def.file)
		}
		queue = append(queue, calledNames(def.tree)...)
	}
	slices.Sort(files)
	return added, files, nil
}

// calledNames lists the template names a tree calls with {{template "name"}}.
func calledNames(tree *tparse.Tree) []string {
	if tree == nil {
		return nil
	}
	var out []string
	var walk func(n tparse.Node)
	walk = func(n tparse.Node) {
		switch n := n.(type) {
		case *tparse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c)
				}
			}
		case *tparse.TemplateNode:
			out = append(out, n.Name)
		case *tparse.IfNode:
			walk(n.List)
			walk(n.ElseList)
		case *tparse.RangeNode:
			walk(n.List)
			walk(n.ElseList)
		case *tparse.WithNode:
			walk(n.List)
			walk(n.ElseList)
		}
	}
	walk(tree.Root)
	return out
}

// readTemplate reads a template file. A device would be read until memory runs out
// (/dev/zero), a FIFO would block the read forever: only regular files (or links to
// them) are templates.
func readTemplate(path string) (string, error) {
	b, err := regfile.Read(path, MaxFileSize)
	if err != nil {
		return "", fmt.Errorf("read template %s: %w", path, err)
	}
	return string(b), nil
}
