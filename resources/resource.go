// Package resources loads confd-format template resources (TOML) and syncs one rendered
// file: stage, check, atomic replace, and the reload command to run. What renders them,
// once or as the watch daemon, is package render.
package resources

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/template"
	"github.com/heraldhq/herald/template/regfile"
)

// Resource is one [template] table of a conf.d/*.toml file, validated and resolved.
type Resource struct {
	Name string // path of the .toml below conf.d, e.g. "haproxy.toml"
	File string // the .toml file

	Src      string // template file
	Dest     string
	Keys     []string // absolute keys as read (prefix applied); nil: inferred from the template's reads
	Prefix   string   // global prefix joined with the resource's
	Mode     fs.FileMode
	ModeSet  bool
	UID, GID int // -1: leave as created

	CheckCmd      string
	ReloadCmd     string
	CheckTimeout  time.Duration
	ReloadTimeout time.Duration
	RenderTimeout time.Duration // 0: the runner's
	Wait          Wait          // zero: the runner's global wait
	Backup        bool
	MakeDirs      bool
	// FollowSymlink writes through a dest that is a symlink (to the file it names);
	// without it such a dest is refused, see Sync.
	FollowSymlink bool
	// SpareFile keeps dest's previous inode beside it as its spare and rewrites that at
	// the next change instead of creating a file (see newSpareStage).
	SpareFile bool

	// OptionalServices may be absent from the registry without failing `herald render`
	// ("*": any).
	OptionalServices []string
	Guard            GuardOverride // the resource's own empty-drop guard settings

	Template *template.Template

	// Each makes a fan-out resource: one file per item of the list it names, at
	// DestField rendered for the item (Dest holds the field as written). Its files are
	// resources of their own (Item set, Parent naming this one), made by the runner.
	Each      *template.Each
	DestField *template.Field
	Item      any    // a fan-out file's item: its template's dot
	ItemKey   string // its key (service name, instance ID, key name): {{.item}} in commands
	Parent    string // a fan-out file's resource name ("" for others)

	// Warnings are problems confd ignores and so herald does too, e.g. an owner name
	// this system does not know (each an *Error naming the file and line).
	Warnings []error

	// Fingerprint changes when the resource file or its template changes, so a hot
	// reload re-renders only what was edited.
	Fingerprint string
}

// Wait is consul-template's quiescence: render once no change came for Min, and at the
// latest Max after the first change of a burst.
type Wait struct {
	Min, Max time.Duration
}

// ParseWait reads "2s" or "2s:10s". A lone value means min with max = 4*min, as
// consul-template does.
func ParseWait(s string) (Wait, error) {
	if s == "" {
		return Wait{}, nil
	}
	lo, hi, two := strings.Cut(s, ":")
	min, err := time.ParseDuration(strings.TrimSpace(lo))
	if err != nil {
		return Wait{}, fmt.Errorf("wait %q: %w", s, err)
	}
	max := 4 * min
	if two {
		if max, err = time.ParseDuration(strings.TrimSpace(hi)); err != nil {
			return Wait{}, fmt.Errorf("wait %q: %w", s, err)
		}
	}
	if min < 0 || max < min {
		return Wait{}, fmt.Errorf("wait %q: want min:max with 0 <= min <= max", s)
	}
	return Wait{min, max}, nil
}

// Scope returns the resource's keys as template scope: nil when keys are inferred.
func (r *Resource) Scope() []string { return r.Keys }

// Targets returns what the resource declares it reads (nil when inferred).
func (r *Resource) Targets() []backends.Target {
	var out []backends.Target
	for _, p := range backends.MinimalPrefixes(r.Keys) {
		out = append(out, backends.PrefixTarget(p))
	}
	return out
}

// LoadOptions are the global settings that shape every resource.
type LoadOptions struct {
	ConfDir string // holds conf.d/ and templates/
	Prefix  string // global prefix, joined before each resource's own prefix
	// PrefixReplaces: a non-empty Prefix replaces a resource's own prefix instead of
	// going before it (confd's rule, for herald confd).
	PrefixReplaces bool
	CheckTimeout   time.Duration
	ReloadTimeout  time.Duration
	// SpareFiles is the default of every resource's spare_file: one switch for a
	// confdir of many resources; a resource's own spare_file, true or false, wins.
	SpareFiles bool
	// Partials are the definitions every template may call; Load reads them from
	// <ConfDir>/templates/partials once for all resources (LoadFile, when nil, too).
	Partials *template.Partials
}

// PartialsDir is where a confdir keeps the files whose definitions every template can
// call.
func PartialsDir(confDir string) string {
	return filepath.Join(confDir, "templates", template.PartialsDir)
}

// fileResource is the TOML shape: confd's fields plus herald's extensions.
type fileResource struct {
	Template *fileTemplate `toml:"template"`
}

// fileTemplate is the [template] table.
type fileTemplate struct {
	Each      string   `toml:"each"`
	Src       string   `toml:"src"`
	Dest      string   `toml:"dest"`
	Keys      []string `toml:"keys"`
	Prefix    string   `toml:"prefix"`
	Mode      string   `toml:"mode"`
	UID       *int     `toml:"uid"`
	GID       *int     `toml:"gid"`
	Owner     string   `toml:"owner"`
	Group     string   `toml:"group"`
	CheckCmd  string   `toml:"check_cmd"`
	ReloadCmd string   `toml:"reload_cmd"`

	Wait          string `toml:"wait"`
	Backup        bool   `toml:"backup"`
	MakeDirs      bool   `toml:"make_dirs"`
	FollowSymlink bool   `toml:"follow_symlink"`
	SpareFile     bool   `toml:"spare_file"`
	CheckTimeout  string `toml:"check_timeout"`
	ReloadTimeout string `toml:"reload_timeout"`
	RenderTimeout string `toml:"render_timeout"`

	OptionalServices []string `toml:"optional_services"`
	MinInstances     *int     `toml:"min_instances"`
	MaxDrop          string   `toml:"max_drop"`
	DropHold         string   `toml:"drop_hold"`
}

// Error is one problem with one resource file; Line is 0 when unknown. With Dir set,
// File is a directory below conf.d that could not be read: the resources of the files
// below it are unknown (a hot reload keeps their previous versions).
type Error struct {
	File string
	Line int
	Msg  string
	Err  error
	Dir  bool
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Err != nil {
		return loc + ": " + e.Msg + ": " + e.Err.Error()
	}
	return loc + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads every conf.d/**/*.toml below opts.ConfDir, in lexical order. It returns the
// resources that are valid and one error listing every problem of every bad file, so a
// user fixes them all in one pass. Nothing is written.
func Load(opts LoadOptions) ([]*Resource, error) {
	// Absolute, so {{.src}}/{{.dest}} in commands do not depend on herald's cwd.
	if abs, err := filepath.Abs(opts.ConfDir); err == nil {
		opts.ConfDir = abs
	}
	dir := filepath.Join(opts.ConfDir, "conf.d")
	files, errs := resourceFiles(dir)
	slices.Sort(files)
	var (
		out  []*Resource
		dest = map[string]string{}
	)
	if opts.Partials == nil {
		opts.Partials = template.LoadPartials(PartialsDir(opts.ConfDir))
	}
	// Reported once here; a resource that calls a partial fails too (it may need the
	// broken file), one that calls none renders.
	if err := opts.Partials.Err(); err != nil {
		errs = append(errs, &Error{File: opts.Partials.Dir(), Msg: "bad partials", Err: err})
	}
	for _, f := range files {
		r, err := LoadFile(f, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, dup := dest[r.Dest]; dup {
			errs = append(errs, &Error{File: f, Msg: fmt.Sprintf("dest %s is also written by %s", r.Dest, other)})
			continue
		}
		dest[r.Dest] = f
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// MaxResourceFile bounds a resource file (a few hundred bytes in practice).
const MaxResourceFile = 1 << 20

// Fingerprint hashes what a resource is built from: extra (its resource file and
// settings) and every file its template came from, partials included (Template.Files),
// so that a hot reload re-renders exactly the resources an edit touched.
func Fingerprint(t *template.Template, extra ...string) string {
	h := sha256.New()
	for _, e := range extra {
		fmt.Fprintf(h, "%d\x00%s", len(e), e)
	}
	for _, f := range t.Files() {
		b, _ := regfile.Read(f, template.MaxFileSize)
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// maxID is the largest user or group ID a file can have: IDs are 32 bits and
// 4294967295 is (uid_t)-1, which chown reads as "leave unchanged". A larger number
// would wrap (4294967296 is root).
const maxID = 1<<32 - 2

func checkID(id int) error {
	// int64: on 32-bit platforms (armv7) maxID does not fit an int.
	if id < 0 || int64(id) > maxID {
		return fmt.Errorf("%d is out of range (0 to %d)", id, int64(maxID))
	}
	return nil
}

// ParseMode reads an octal mode such as "0644" or "4755". The setuid, setgid and
// sticky bits (04000, 02000, 01000) are kept as fs.ModeSetuid, fs.ModeSetgid and
// fs.ModeSticky, which is what os.Chmod applies and os.Stat reports, so a dest with
// them set exactly is in sync.
func ParseMode(s string) (fs.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("mode %q is not an octal file mode like \"0644\"", s)
	}
	mode := fs.FileMode(m) & fs.ModePerm
	for bit, flag := range map[uint64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
		if m&bit != 0 {
			mode |= flag
		}
	}
	return mode, nil
}

func lookupUser(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil {
		return id, checkID(id)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(u.Uid)
}

func lookupGroup(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil {
		return id, checkID(id)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

var lineRe = regexp.MustCompile(`line (\d+)`)

func tomlErrLine(err error) int {
	if m := lineRe.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// DefaultRenderTimeout bounds one template execution when neither the resource
// (render_timeout) nor the runner (--render-timeout) says otherwise. Real templates take
// milliseconds; this is for one that loops practically forever.
const DefaultRenderTimeout = 10 * time.Second
