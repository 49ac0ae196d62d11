package template

import (
	"slices"
	"testing"

	"github.com/heraldhq/herald/backends"
)

// Dotted names (Java, Dubbo, gRPC services registered by Curator) against consul-template's
// tag.name: the exact catalog name wins; "tag=" says the tag explicitly (issue 16).
func TestServiceDottedNames(t *testing.T) {
	inst := func(name, addr string, tags ...string) backends.Service {
		return backends.Service{Name: name, Address: addr, Port: 80, Tags: tags, Status: backends.StatusPassing, Healthy: true}
	}
	src := MapSource{
		Svcs: map[string][]backends.Service{
			"com.example.Greeter": {inst("com.example.Greeter", "10.0.0.1")},
			"web":                 {inst("web", "10.0.0.2", "prod"), inst("web", "10.0.0.3")},
			"prod.web":            {inst("prod.web", "10.0.0.4")},
			"api":                 {inst("api", "10.0.0.5", "v2")},
		},
		Names: []backends.ServiceSummary{{Name: "api"}, {Name: "com.example.Greeter"}, {Name: "prod.web"}, {Name: "web"}},
	}
	tests := []struct {
		name, text, want string
	}{
		{"exact dotted name", `{{range service "com.example.Greeter"}}{{.Address}} {{end}}`, "10.0.0.1 "},
		{"exact name wins over tag.name", `{{range service "prod.web"}}{{.Address}} {{end}}`, "10.0.0.4 "},
		{"explicit tag", `{{range service "web" "tag=prod"}}{{.Address}} {{end}}`, "10.0.0.2 "},
		{"explicit tag with a dotted name", `{{range service "com.example.Greeter" "tag=v9,any"}}{{.Address}} {{end}}`, ""},
		{"tag.name when the catalog has no such name", `{{range service "v2.api"}}{{.Address}} {{end}}`, "10.0.0.5 "},
		{"tag.name with datacenter and filter", `{{range service "v2.api@dc1|any"}}{{.Address}} {{end}}`, "10.0.0.5 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, reads, err := render(t, tt.text, src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if out != tt.want {
				t.Errorf("got %q, want %q", out, tt.want)
			}
			if len(reads.Absent) != 0 {
				t.Errorf("Absent = %v, want none", reads.Absent)
			}
		})
	}
}

// A service the catalog does not have at all is reported, by the name the template used;
// a service that exists with nothing passing is an empty list, not absent.
func TestServiceAbsent(t *testing.T) {
	src := MapSource{
		Svcs: map[string][]backends.Service{
			"web": {{Name: "web", Address: "10.0.0.2", Port: 80, Status: backends.StatusCritical}},
		},
		Names: []backends.ServiceSummary{{Name: "web"}},
	}
	_, reads, err := render(t, `{{service "web"}}{{service "wbe"}}{{service "com.example.Nope"}}{{service "wbe" "any"}}`, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"com.example.Nope", "wbe"}; !slices.Equal(reads.Absent, want) {
		t.Errorf("Absent = %v, want %v", reads.Absent, want)
	}
	if !reads.Catalog || reads.ServiceNames {
		t.Error("the catalog was consulted but not recorded as read (it would not be watched)")
	}
	if reads.Counts["web|passing"] != 0 || len(reads.Counts) != 4 {
		t.Errorf("Counts = %v", reads.Counts)
	}

	// A non-empty list needs no catalog: nothing extra is read or watched.
	src.Svcs["web"][0].Status = backends.StatusPassing
	_, reads, err = render(t, `{{service "web"}}`, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if reads.Catalog || len(reads.Absent) != 0 || reads.Counts["web|passing"] != 1 {
		t.Errorf("Reads = %+v, want web counted 1, no catalog read", reads)
	}
}
