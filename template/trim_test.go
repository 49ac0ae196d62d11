package template

import "testing"

// Every place a function can be called must survive the trimmed re-parse: a name the
// walk missed would fail the second parse with "function not defined".
func TestTrimmedFuncsCoverEveryConstruct(t *testing.T) {
	text := `{{define "d"}}{{upper .}}{{end -}}
{{if eq (len (ls "/a")) 1}}{{template "d" (lower "X")}}{{else if not true}}{{trim " "}}{{end -}}
{{range $i, $k := until 2}}{{add $i 1}}{{else}}{{sprig_add 1 2}}{{end -}}
{{with getv "/a/b" "d"}}{{. | quote}}{{else}}{{title "x"}}{{end -}}
{{$x := dict "k" (toJson (list 1))}}{{(index $x "k") | b64enc}}{{block "blk" (repeat 2 "y")}}{{.}}{{end}}`
	tp, err := Parse("t", text)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := tp.Execute(&MapSource{KV: map[string]string{"/a/b": "v"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), `X12"v"WzFdyy`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if n := len(tp.main.tmpl.Templates()); n < 3 {
		t.Fatalf("define/block templates lost: %d", n)
	}
}
