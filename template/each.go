package template

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"

	"github.com/heraldhq/herald/backends"
)

// Each is a fan-out resource's list: what it renders one file for. The list is read by
// executing a template like any other, through the same functions, so loading, watching
// and the record of what it read (Reads) need nothing of their own.
//
//	services [GLOB] [tag=TAG]   every service in the catalog: the item has .Name and .Tags
//	service NAME [FILTER...]    every instance of a service (as the service function
//	                            reads it): the item is the instance (.ID, .Address, .Port...)
//	ls /PREFIX                  every key directly under PREFIX: the item is its name
//	lsdir /PREFIX               every directory directly under PREFIX: the item is its name
type Each struct {
	Spec string
	list *Template
}

// Item is one element of the list: Key identifies it among the others (the service
// name, the instance ID, the key name), Value is what the item's render sees as its dot.
type Item struct {
	Key   string
	Value any
}

// Sample is an empty item of the list's kind, for checking a template without data.
func (e *Each) Sample() any {
	switch strings.Fields(e.Spec)[0] {
	case "services":
		return backends.ServiceSummary{}
	case "service":
		return backends.Service{}
	}
	return ""
}

// ParseEach reads an `each` value.
func ParseEach(spec string) (*Each, error) {
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return nil, fmt.Errorf("each %q: want services, service NAME, ls /PREFIX or lsdir /PREFIX", spec)
	}
	var body string
	switch verb, args := fields[0], fields[1:]; verb {
	case "services":
		var globs, tags []string
		for _, a := range args {
			if t, ok := strings.CutPrefix(a, "tag="); ok {
				if t == "" {
					return nil, fmt.Errorf("each %q: tag= needs a tag", spec)
				}
				tags = append(tags, t)
				continue
			}
			if _, err := path.Match(a, ""); err != nil {
				return nil, fmt.Errorf("each %q: pattern %q: %w", spec, a, err)
			}
			globs = append(globs, a)
		}
		body = fmt.Sprintf(`{{range services}}{{if $.Wants .Name .Tags %s %s}}{{$.Add .Name .}}{{end}}{{end}}`,
			quoteList(globs), quoteList(tags))
	case "service":
		if len(args) == 0 {
			return nil, fmt.Errorf("each %q: service needs a NAME", spec)
		}
		if _, err := backends.ParseServiceQuery(args[0], args[1:]...); err != nil {
			return nil, fmt.Errorf("each %q: %w", spec, err)
		}
		body = fmt.Sprintf(`{{range service %s}}{{$.Add (or .ID .HostPort) .}}{{end}}`, quoteArgs(args))
	case "ls", "lsdir":
		if len(args) != 1 || !strings.HasPrefix(args[0], "/") {
			return nil, fmt.Errorf("each %q: %s needs one absolute prefix, e.g. %s /apps", spec, verb, verb)
		}
		body = fmt.Sprintf(`{{range %s %s}}{{$.Add . .}}{{end}}`, verb, strconv.Quote(args[0]))
	default:
		return nil, fmt.Errorf("each %q: unknown list %q (want services, service NAME, ls /PREFIX or lsdir /PREFIX)", spec, verb)
	}
	t, err := Parse("each", body)
	if err != nil {
		return nil, fmt.Errorf("each %q: %w", spec, err)
	}
	return &Each{Spec: spec, list: t}, nil
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, " ")
}

// quoteList spells a string slice as a template expression.
func quoteList(l []string) string {
	if len(l) == 0 {
		return "(list)"
	}
	return "(list " + quoteArgs(l) + ")"
}

// List reads the items from src. It returns what the listing read even when it fails,
// like Execute, so the caller can load what was missing and list again.
func (e *Each) List(src Source, opts Options) ([]Item, *Reads, error) {
	c := &collector{seen: map[string]bool{}}
	opts.Data = c
	_, reads, err := e.list.Execute(src, opts)
	if err != nil {
		return nil, reads, fmt.Errorf("each %q: %w", e.Spec, err)
	}
	return c.items, reads, nil
}

// collector is the listing template's dot: it gathers the items in order.
type collector struct {
	items []Item
	seen  map[string]bool
}

// Add appends an item; a key seen already (an instance listed twice) counts once.
func (c *collector) Add(key string, v any) string {
	if !c.seen[key] {
		c.seen[key] = true
		c.items = append(c.items, Item{Key: key, Value: v})
	}
	return ""
}

// Wants filters the catalog: the name matches one of globs (when any) and the service
// has every tag.
func (c *collector) Wants(name string, tags []string, globs, want []any) bool {
	if len(globs) > 0 && !slices.ContainsFunc(globs, func(g any) bool {
		ok, _ := path.Match(g.(string), name)
		return ok
	}) {
		return false
	}
	for _, t := range want {
		if !slices.Contains(tags, t.(string)) {
			return false
		}
	}
	return true
}

// Field is a resource field written as a template over a fan-out item (dest): sprig's
// repeatable functions, no registry reads.
type Field struct {
	text string
	t    *template.Template
}

// ParseField parses a field's template.
func ParseField(name, text string) (*Field, error) {
	t, err := template.New(name).Funcs(sprig.HermeticTxtFuncMap()).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	return &Field{text: text, t: t}, nil
}

// Execute renders the field for one item.
func (f *Field) Execute(item any) (string, error) {
	var b strings.Builder
	if err := f.t.Execute(&b, item); err != nil {
		return "", err
	}
	return b.String(), nil
}

// String is the field as written.
func (f *Field) String() string { return f.text }

// StaticDir is the directory every rendering of the field lies under: the part before
// its first action, up to its last slash. "/etc/nginx/sites/{{.Name}}.conf" gives
// "/etc/nginx/sites".
func (f *Field) StaticDir() string {
	lead, _, _ := strings.Cut(f.text, "{{")
	i := strings.LastIndexByte(lead, '/')
	if i < 0 {
		return "."
	}
	if i == 0 {
		return "/"
	}
	return lead[:i]
}
