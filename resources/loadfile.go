package resources

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/heraldhq/herald/template"
	"github.com/heraldhq/herald/template/regfile"
)

// LoadFile reads and validates one resource file.
func LoadFile(file string, opts LoadOptions) (*Resource, error) {
	raw, err := regfile.Read(file, MaxResourceFile)
	if err != nil {
		return nil, &Error{File: file, Msg: "cannot read", Err: err}
	}
	var fr fileResource
	md, err := toml.Decode(string(raw), &fr)
	if err != nil {
		return nil, decodeError(file, err)
	}
	l := &fileLoader{file: file, raw: raw, opts: opts, md: md}
	for _, k := range md.Undecoded() {
		l.fail(k[len(k)-1], fmt.Sprintf("unknown key %q", k.String()), nil)
	}
	if fr.Template == nil {
		if len(l.errs) == 0 {
			l.errs = append(l.errs, &Error{File: file, Msg: "no [template] table"})
		}
		return nil, errors.Join(l.errs...)
	}
	l.t = fr.Template
	l.r = l.resource()
	l.src()
	if fr.Template.Each != "" {
		l.each()
	} else {
		l.dest()
	}
	l.keysAndMode()
	l.owner()
	l.timing()
	l.guard()
	for _, c := range []struct{ key, cmd string }{{"check_cmd", l.r.CheckCmd}, {"reload_cmd", l.r.ReloadCmd}} {
		if _, err := expandVars(c.cmd, l.r.cmdVars("")); err != nil {
			l.fail(c.key, c.key, err)
		}
	}
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	l.r.Fingerprint = Fingerprint(l.r.Template, string(raw), l.r.Prefix)
	return l.r, nil
}

// decodeError names the file and line of a TOML error.
func decodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.Position.Line, Msg: "bad TOML: " + pe.Message}
	}
	if line, msg, ok := tomlTypeError(err); ok {
		return &Error{File: file, Line: line, Msg: msg}
	}
	return &Error{File: file, Line: tomlErrLine(err), Msg: "bad TOML", Err: err}
}

// fileLoader turns one decoded [template] table into a Resource, collecting every
// problem with the key's line rather than stopping at the first.
type fileLoader struct {
	file string
	raw  []byte
	opts LoadOptions
	md   toml.MetaData
	t    *fileTemplate
	r    *Resource
	errs []error
}

func (l *fileLoader) fail(key, msg string, err error) {
	l.errs = append(l.errs, &Error{File: l.file, Line: KeyLine(l.raw, key), Msg: msg, Err: err})
}

// warn records a problem that does not stop the resource (as in confd).
func (l *fileLoader) warn(key, msg string, err error) {
	l.r.Warnings = append(l.r.Warnings, &Error{File: l.file, Line: KeyLine(l.raw, key), Msg: msg, Err: err})
}

// resource is what needs no checking.
func (l *fileLoader) resource() *Resource {
	t, opts := l.t, l.opts
	name, _ := filepath.Rel(filepath.Join(opts.ConfDir, "conf.d"), l.file)
	r := &Resource{
		Name:             name,
		File:             l.file,
		UID:              -1,
		GID:              -1,
		CheckCmd:         t.CheckCmd,
		ReloadCmd:        t.ReloadCmd,
		Backup:           t.Backup,
		MakeDirs:         t.MakeDirs,
		FollowSymlink:    t.FollowSymlink,
		SpareFile:        t.SpareFile || opts.SpareFiles && !l.md.IsDefined("template", "spare_file"),
		CheckTimeout:     opts.CheckTimeout,
		ReloadTimeout:    opts.ReloadTimeout,
		Prefix:           path.Join("/", opts.Prefix, t.Prefix),
		OptionalServices: t.OptionalServices,
	}
	if opts.PrefixReplaces && opts.Prefix != "" {
		r.Prefix = path.Join("/", opts.Prefix)
	}
	return r
}

// src finds and parses the template.
func (l *fileLoader) src() {
	t, r := l.t, l.r
	if t.Src == "" {
		l.fail("template", "src is required", nil)
		return
	}
	r.Src = filepath.Join(l.opts.ConfDir, "templates", t.Src)
	if filepath.IsAbs(t.Src) {
		r.Src = t.Src
	}
	partials := l.opts.Partials
	if partials == nil {
		partials = template.LoadPartials(PartialsDir(l.opts.ConfDir))
	}
	tmpl, err := partials.ParseFile(r.Src)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.fail("src", "template "+r.Src+" does not exist", nil)
	case err != nil:
		l.fail("src", "template", err)
	default:
		r.Template = tmpl
	}
}

// dest resolves dest and refuses what herald must not replace.
func (l *fileLoader) dest() {
	t, r := l.t, l.r
	if t.Dest == "" {
		l.fail("template", "dest is required", nil)
		return
	}
	// A relative dest is relative to the confdir, so a tree renders the same from any
	// working directory (confd resolves it against its own working directory).
	r.Dest = t.Dest
	if !filepath.IsAbs(r.Dest) {
		r.Dest = filepath.Join(l.opts.ConfDir, r.Dest)
	}
	r.Dest = filepath.Clean(r.Dest)
	if li, err := os.Lstat(r.Dest); err == nil && li.Mode()&fs.ModeSymlink != 0 && !t.FollowSymlink {
		l.fail("dest", "dest "+r.Dest+" is a symlink: "+errSymlinkHint, nil)
	} else if fi, err := os.Stat(r.Dest); err == nil && fi.IsDir() {
		l.fail("dest", "dest "+r.Dest+" is a directory", nil)
	} else if err == nil && !fi.Mode().IsRegular() {
		// A FIFO or a device: reading it to compare would block or never end, and the
		// rename would replace it.
		l.fail("dest", "dest "+r.Dest+" is not a regular file", nil)
	}
}

// each reads a fan-out resource's list and its dest, a template over the item. Its
// check_cmd and reload_cmd are not: an item comes from the registry, and no registry
// value reaches a shell unquoted; {{.dest}} and {{.item}} give them the item's file and
// key, shell-quoted.
func (l *fileLoader) each() {
	t, r := l.t, l.r
	e, err := template.ParseEach(t.Each)
	if err != nil {
		l.fail("each", "bad each", err)
		return
	}
	r.Each = e
	if t.Dest == "" {
		l.fail("template", "dest is required", nil)
		return
	}
	dest := t.Dest
	if !filepath.IsAbs(dest) {
		dest = filepath.Join(l.opts.ConfDir, dest)
	}
	if !strings.Contains(dest, "{{") {
		l.fail("dest", fmt.Sprintf("dest %q names no item: with each, dest is a template over the item, e.g. \"/etc/nginx/sites/{{.Name}}.conf\"", t.Dest), nil)
		return
	}
	f, err := template.ParseField("dest", dest)
	if err != nil {
		l.fail("dest", "bad dest template", err)
		return
	}
	r.Dest, r.DestField = dest, f
	if t.Backup {
		l.fail("backup", "backup is not supported with each: the files come and go with the list", nil)
	}
}

// keysAndMode reads keys (under the prefix), mode, uid and gid.
func (l *fileLoader) keysAndMode() {
	t, r := l.t, l.r
	if l.md.IsDefined("template", "keys") {
		r.Keys = []string{}
		for _, k := range t.Keys {
			r.Keys = append(r.Keys, path.Join(r.Prefix, k))
		}
	}
	if t.Mode != "" {
		if m, err := ParseMode(t.Mode); err != nil {
			l.fail("mode", err.Error(), nil)
		} else {
			r.Mode, r.ModeSet = m, true
		}
	}
	for _, id := range []struct {
		key string
		v   *int
		to  *int
	}{{"uid", t.UID, &r.UID}, {"gid", t.GID, &r.GID}} {
		if id.v == nil {
			continue
		}
		if err := checkID(*id.v); err != nil {
			l.fail(id.key, id.key, err)
			continue
		}
		*id.to = *id.v
	}
}

// owner resolves owner and group names. An unknown name is a warning (as in confd); a
// number out of range is never ignored: it would wrap (to root).
func (l *fileLoader) owner() {
	t, r := l.t, l.r
	for _, o := range []struct {
		key, name, idKey string
		id               *int
		lookup           func(string) (int, error)
		to               *int
	}{{"owner", t.Owner, "uid", t.UID, lookupUser, &r.UID}, {"group", t.Group, "gid", t.GID, lookupGroup, &r.GID}} {
		if o.name == "" {
			continue
		}
		if o.id != nil {
			l.fail(o.key, o.key+" and "+o.idKey+" both given", nil)
			continue
		}
		v, err := o.lookup(o.name)
		switch {
		case err == nil:
			*o.to = v
		case isNumber(o.name):
			l.fail(o.key, fmt.Sprintf("%s %q", o.key, o.name), err)
		default:
			l.warn(o.key, fmt.Sprintf("unknown %s %q ignored, the file keeps the default %s (as in confd)", o.key, o.name, o.key), err)
		}
	}
}

func isNumber(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// timing reads wait and the command and render timeouts.
func (l *fileLoader) timing() {
	t, r := l.t, l.r
	var err error
	if r.Wait, err = ParseWait(t.Wait); err != nil {
		l.fail("wait", "bad wait", err)
	}
	for _, d := range []struct {
		key string
		s   string
		to  *time.Duration
	}{{"check_timeout", t.CheckTimeout, &r.CheckTimeout}, {"reload_timeout", t.ReloadTimeout, &r.ReloadTimeout}, {"render_timeout", t.RenderTimeout, &r.RenderTimeout}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			l.fail(d.key, fmt.Sprintf("%s %q is not a positive duration like \"30s\"", d.key, d.s), nil)
			continue
		}
		*d.to = v
	}
}

// guard reads the resource's own empty-drop guard settings.
func (l *fileLoader) guard() {
	t, r := l.t, l.r
	if t.MinInstances != nil {
		if *t.MinInstances < 0 {
			l.fail("min_instances", fmt.Sprintf("min_instances %d is negative", *t.MinInstances), nil)
		}
		r.Guard.MinInstances = t.MinInstances
	}
	if t.MaxDrop != "" {
		if v, err := ParseShare(t.MaxDrop); err != nil {
			l.fail("max_drop", "bad max_drop", err)
		} else {
			r.Guard.MaxDrop = &v
		}
	}
	if t.DropHold != "" {
		if v, err := time.ParseDuration(t.DropHold); err != nil || v < 0 {
			l.fail("drop_hold", fmt.Sprintf("drop_hold %q is not a duration like \"30s\"", t.DropHold), nil)
		} else {
			r.Guard.Hold = &v
		}
	}
}
