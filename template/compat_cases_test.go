// The expected outputs below are confd's own: each case was rendered by confd v0.16.0's
// template functions over memkv v0.1.1 (the revision its Gopkg.lock pins), loading keys
// as its etcdv3 backend and setVars do, with text/template from the Go that builds herald.
// Error cases hold the position text/template reports and confd's message, except div and
// mod by zero, where confd reports a recovered runtime panic and herald a clear error.
// Change a want only after re-running confd on the case.

package template

// compatData is the default data set of the compatibility cases.
func compatData() map[string]string {
	return map[string]string{
		"/app-b/x":                       "dash",
		"/app/b64":                       "VmFsdWU=",
		"/app/b64bad":                    "!!!",
		"/app/bool":                      "true",
		"/app/db/pass":                   "s3cret",
		"/app/db/user":                   "admin",
		"/app/empty":                     "",
		"/app/json/arr":                  "[\"b\",\"a\",\"c\"]",
		"/app/json/bad":                  "{not json",
		"/app/json/null":                 "null",
		"/app/json/obj":                  "{\"Id\":\"host1\",\"IP\":\"192.168.10.11\",\"ports\":[80,443],\"nested\":{\"k\":\"v\"}}",
		"/app/nan":                       "4x2",
		"/app/num":                       "42",
		"/app/port":                      "443",
		"/app/upstream/host1":            "10.0.0.9:8080",
		"/app/upstream/host1/domain":     "a.example.com",
		"/app/upstream/host10":           "10.0.0.5:8080",
		"/app/upstream/host2":            "10.0.0.1:8080",
		"/app/upstream/host2/domain":     "b.example.com",
		"/app/url":                       "app.example.com",
		"/app/vhosts/host1":              "app.example.com",
		"/deis/database/pass":            "pass",
		"/deis/database/user":            "user",
		"/deis/dirprefix/node1":          "prefix_node1",
		"/deis/dirprefix/node2/leafnode": "prefix_node2",
		"/deis/dirprefix/node3/leafnode": "prefix_node3",
		"/deis/dirprefix_a/node4":        "prefix_a_node4",
		"/deis/prefix/node1":             "prefix_node1",
		"/deis/prefix/node2/leafnode":    "prefix_node2",
		"/deis/prefix_a/node4":           "prefix_a_node4",
		"/deis/services/key":             "value",
		"/deis/services/notaservice/foo": "bar",
		"/deis/services/srv1/node1":      "10.244.1.1:80",
		"/deis/services/srv1/node2":      "10.244.1.2:80",
		"/deis/services/srv2/node1":      "10.244.2.1:80",
		"/top":                           "root-level",
	}
}

// compatCases are confd templates with the exact output (or error) confd gives for them.
var compatCases = []compatCase{
	{
		name: "get",
		tmpl: `{{with get "/app/port"}}{{.Key}}={{.Value}}{{end}}`,
		want: `/app/port=443`,
	},
	{
		name: "get base of key",
		tmpl: `{{with get "/app/db/user"}}{{base .Key}}: {{.Value}}{{end}}`,
		want: `user: admin`,
	},
	{
		name: "get empty value",
		tmpl: `[{{(get "/app/empty").Value}}]`,
		want: `[]`,
	},
	{
		name: "get missing",
		tmpl: `{{get "/nope"}}`,
		err:  []string{"get missing:1:2", "key does not exist: /nope"},
	},
	{
		name: "get trailing slash",
		tmpl: `{{get "/app/port/"}}`,
		err:  []string{"get trailing slash:1:2", "key does not exist: /app/port/"},
	},
	{
		name: "get relative",
		tmpl: `{{get "app/port"}}`,
		err:  []string{"get relative:1:2", "key does not exist: app/port"},
	},
	{
		name: "get double slash",
		tmpl: `{{get "/app//port"}}`,
		err:  []string{"get double slash:1:2", "key does not exist: /app//port"},
	},
	{
		name: "get dir",
		tmpl: `{{get "/app/db"}}`,
		err:  []string{"get dir:1:2", "key does not exist: /app/db"},
	},
	{
		name: "getv",
		tmpl: `{{getv "/app/port"}}`,
		want: `443`,
	},
	{
		name: "getv default unused",
		tmpl: `{{getv "/app/port" "80"}}`,
		want: `443`,
	},
	{
		name: "getv default",
		tmpl: `{{getv "/nope" "80"}}`,
		want: `80`,
	},
	{
		name: "getv empty default",
		tmpl: `[{{getv "/nope" ""}}]`,
		want: `[]`,
	},
	{
		name: "getv extra defaults",
		tmpl: `{{getv "/nope" "a" "b"}}`,
		want: `a`,
	},
	{
		name: "getv empty value beats default",
		tmpl: `[{{getv "/app/empty" "x"}}]`,
		want: `[]`,
	},
	{
		name: "getv missing",
		tmpl: `a{{getv "/nope"}}b`,
		err:  []string{"getv missing:1:3", "key does not exist: /nope"},
	},
	{
		name: "exists",
		tmpl: `{{exists "/app/port"}} {{exists "/nope"}} {{exists "/app/db"}} {{exists "/"}} {{exists "/app/port/"}} {{exists "/app/empty"}}`,
		want: `true false false false false true`,
	},
	{
		name: "exists guard",
		tmpl: `{{if exists "/app/url"}}url={{getv "/app/url"}}{{end}}{{if exists "/nope"}}nope{{end}}`,
		want: `url=app.example.com`,
	},
	{
		name: "gets",
		tmpl: `{{range gets "/app/db/*"}}{{.Key}}={{.Value}}
{{end}}`,
		want: `/app/db/pass=s3cret
/app/db/user=admin
`,
	},
	{
		name: "gets middle glob",
		tmpl: `{{range gets "/app/*/host1"}}{{.Key}}={{.Value}}
{{end}}`,
		want: `/app/upstream/host1=10.0.0.9:8080
/app/vhosts/host1=app.example.com
`,
	},
	{
		name: "gets one level only",
		tmpl: `{{range gets "/app/upstream/*"}}{{.Key}}={{.Value}}
{{end}}`,
		want: `/app/upstream/host1=10.0.0.9:8080
/app/upstream/host10=10.0.0.5:8080
/app/upstream/host2=10.0.0.1:8080
`,
	},
	{
		name: "gets two levels",
		tmpl: `{{range gets "/app/upstream/*/*"}}{{.Key}}={{.Value}}
{{end}}`,
		want: `/app/upstream/host1/domain=a.example.com
/app/upstream/host2/domain=b.example.com
`,
	},
	{
		name: "gets none",
		tmpl: `{{gets "/app/missing/*"}} {{len (gets "/app/missing/*")}}`,
		want: `[] 0`,
	},
	{
		name: "gets no meta",
		tmpl: `{{gets "/app/db/user"}} {{gets "/app/db"}}`,
		want: `[{/app/db/user admin}] []`,
	},
	{
		name: "gets question",
		tmpl: `{{gets "/app/db/?ass"}}`,
		want: `[{/app/db/pass s3cret}]`,
	},
	{
		name: "gets class",
		tmpl: `{{gets "/app/db/[pu]*"}} {{gets "/app/db/[^p]*"}}`,
		want: `[{/app/db/pass s3cret} {/app/db/user admin}] [{/app/db/user admin}]`,
	},
	{
		name: "gets escape",
		tmpl: `{{gets "/app/db/\\user"}}`,
		want: `[{/app/db/user admin}]`,
	},
	{
		name: "gets partial segment",
		tmpl: `{{gets "/app/d*/*"}}`,
		want: `[{/app/db/pass s3cret} {/app/db/user admin}]`,
	},
	{
		name: "gets leading star",
		tmpl: `{{gets "*/app/port"}} {{gets "*"}}`,
		want: `[{/app/port 443}] []`,
	},
	{
		name: "gets root",
		tmpl: `{{range gets "/*"}}{{.Key}}={{.Value}}
{{end}}`,
		want: `/top=root-level
`,
	},
	{
		name: "gets bad pattern",
		tmpl: `{{gets "/app/[]a]"}}`,
		err:  []string{"gets bad pattern:1:2", "syntax error in pattern"},
	},
	{
		name: "gets sorted by key",
		tmpl: `{{range gets "/app/upstream/host*"}}{{.Key}} {{end}}`,
		want: `/app/upstream/host1 /app/upstream/host10 /app/upstream/host2 `,
	},
	{
		name: "gets json",
		tmpl: `{{range gets "/app/json/obj"}}{{$d := json .Value}}{{$d.Id}} {{$d.IP}}{{end}}`,
		want: `host1 192.168.10.11`,
	},
	{
		name: "getvs sorted by value",
		tmpl: `{{range getvs "/app/upstream/*"}}{{.}}
{{end}}`,
		want: `10.0.0.1:8080
10.0.0.5:8080
10.0.0.9:8080
`,
	},
	{
		name: "getvs none",
		tmpl: `{{getvs "/nope/*"}} {{len (getvs "/nope/*")}}`,
		want: `[] 0`,
	},
	{
		name: "getvs bad pattern",
		tmpl: `{{getvs "["}}`,
		err:  []string{"getvs bad pattern:1:2", "syntax error in pattern"},
	},
	{
		name: "getvs join",
		tmpl: `servers: {{join (getvs "/app/upstream/*") ","}}`,
		want: `servers: 10.0.0.1:8080,10.0.0.5:8080,10.0.0.9:8080`,
	},
	{
		name: "ls",
		tmpl: `{{ls "/deis/services"}}`,
		want: `[key notaservice srv1 srv2]`,
	},
	{
		name: "ls trailing slash",
		tmpl: `{{ls "/deis/services/"}}`,
		want: `[key notaservice srv1 srv2]`,
	},
	{
		name: "ls key itself",
		tmpl: `{{ls "/deis/services/key"}}`,
		want: `[key]`,
	},
	{
		name: "ls same prefix",
		tmpl: `{{ls "/deis/prefix"}}`,
		want: `[node1 node2]`,
	},
	{
		name: "ls root",
		tmpl: `{{ls "/"}}`,
		want: `[top]`,
	},
	{
		name: "ls empty",
		tmpl: `{{ls ""}} {{ls "deis/services"}} {{ls "/nope"}}`,
		want: `[] [] []`,
	},
	{
		name: "ls double slash",
		tmpl: `{{ls "/deis//services"}}`,
		want: `[deis]`,
	},
	{
		name: "ls dot",
		tmpl: `{{ls "/deis/./services"}} {{ls "/deis/services/."}}`,
		want: `[deis] [deis]`,
	},
	{
		name: "ls dir with value",
		tmpl: `{{ls "/app/upstream/host1"}} {{ls "/app/upstream"}}`,
		want: `[domain host1] [host1 host10 host2]`,
	},
	{
		name: "ls range",
		tmpl: `{{range ls "/deis/services/srv1"}}server {{.}} {{getv (printf "/deis/services/srv1/%s" .)}}
{{end}}`,
		want: `server node1 10.244.1.1:80
server node2 10.244.1.2:80
`,
	},
	{
		name: "lsdir",
		tmpl: `{{lsdir "/deis/services"}}`,
		want: `[notaservice srv1 srv2]`,
	},
	{
		name: "lsdir trailing slash",
		tmpl: `{{lsdir "/deis/services/"}}`,
		want: `[notaservice srv1 srv2]`,
	},
	{
		name: "lsdir same prefix",
		tmpl: `{{lsdir "/deis/dirprefix"}}`,
		want: `[node2 node3]`,
	},
	{
		name: "lsdir root",
		tmpl: `{{lsdir "/"}}`,
		want: `[]`,
	},
	{
		name: "lsdir empty",
		tmpl: `{{lsdir ""}} {{lsdir "deis"}} {{lsdir "/nope"}} {{lsdir "/deis/services/key"}}`,
		want: `[] [] [] []`,
	},
	{
		name: "lsdir double slash",
		tmpl: `{{lsdir "/deis//services"}}`,
		want: `[]`,
	},
	{
		name: "lsdir deep",
		tmpl: `{{lsdir "/deis"}} {{lsdir "/app/upstream"}}`,
		want: `[database dirprefix dirprefix_a prefix prefix_a services] [host1 host2]`,
	},
	{
		name: "lsdir nested range",
		tmpl: `{{range $d := lsdir "/deis/services"}}{{$d}}:{{range ls (printf "/deis/services/%s" $d)}} {{.}}{{end}}
{{end}}`,
		want: `notaservice: foo
srv1: node1 node2
srv2: node1
`,
	},
	{
		name: "json",
		tmpl: `{{$d := json (getv "/app/json/obj")}}{{$d.Id}} {{$d.IP}} {{index $d.ports 1}} {{$d.nested.k}} {{$d.missing}}`,
		want: `host1 192.168.10.11 443 v <no value>`,
	},
	{
		name: "json range",
		tmpl: `{{range $k, $v := json (getv "/app/json/obj")}}{{$k}}={{$v}};{{end}}`,
		want: `IP=192.168.10.11;Id=host1;nested=map[k:v];ports=[80 443];`,
	},
	{
		name: "json null",
		tmpl: `[{{range json (getv "/app/json/null")}}x{{end}}]`,
		want: `[]`,
	},
	{
		name: "json bad",
		tmpl: `{{json (getv "/app/json/bad")}}`,
		err:  []string{"json bad:1:2", "invalid character 'n' looking for beginning of object key string"},
	},
	{
		name: "json array not object",
		tmpl: `{{json (getv "/app/json/arr")}}`,
		err:  []string{"json array not object:1:2", "json: cannot unmarshal array into Go value of type map[string]interface {}"},
	},
	{
		name: "jsonArray",
		tmpl: `{{range jsonArray (getv "/app/json/arr")}}{{.}} {{end}}`,
		want: `b a c `,
	},
	{
		name: "jsonArray bad",
		tmpl: `{{jsonArray (getv "/app/json/obj")}}`,
		err:  []string{"jsonArray bad:1:2", "json: cannot unmarshal object into Go value of type []interface {}"},
	},
	{
		name: "base dir",
		tmpl: `{{base "/a/b/c"}} {{base ""}} {{base "/"}} {{dir "/a/b/c"}} {{dir "a"}} {{dir "/a/"}}`,
		want: `c . / /a/b . /a`,
	},
	{
		name: "split",
		tmpl: `{{split "a:b:c" ":"}} {{index (split (getv "/app/upstream/host1") ":") 1}} {{len (split "" ":")}}`,
		want: `[a b c] 8080 1`,
	},
	{
		name: "join",
		tmpl: `{{join (split "a b c" " ") ","}}`,
		want: `a,b,c`,
	},
	{
		name: "toUpper toLower",
		tmpl: `{{toUpper "Value"}} {{toLower "VaLue"}}`,
		want: `VALUE value`,
	},
	{
		name: "contains",
		tmpl: `{{contains "foobar" "oba"}} {{contains "foobar" "x"}}`,
		want: `true false`,
	},
	{
		name: "replace",
		tmpl: `{{replace "a-b-c" "-" "_" -1}} {{replace "a-b-c" "-" "_" 1}}`,
		want: `a_b_c a_b-c`,
	},
	{
		name: "trimSuffix",
		tmpl: `{{trimSuffix "file.conf" ".conf"}} {{trimSuffix "file" ".conf"}}`,
		want: `file file`,
	},
	{
		name: "map",
		tmpl: `{{$m := map "name" "es" "port" 9200}}{{index $m "name"}}:{{index $m "port"}} {{len (map)}}`,
		want: `es:9200 0`,
	},
	{
		name: "map odd",
		tmpl: `{{map "a"}}`,
		err:  []string{"map odd:1:2", "invalid map call"},
	},
	{
		name: "map key not string",
		tmpl: `{{map 1 2}}`,
		err:  []string{"map key not string:1:2", "map keys must be strings"},
	},
	{
		name: "getenv",
		tmpl: `{{getenv "HERALD_TEST_SET"}}|{{getenv "HERALD_TEST_UNSET"}}|{{getenv "HERALD_TEST_UNSET" "dflt"}}|{{getenv "HERALD_TEST_EMPTY" "dflt"}}|{{getenv "HERALD_TEST_SET" "dflt"}}`,
		want: `on||dflt|dflt|on`,
	},
	{
		name: "datetime",
		tmpl: `{{printf "%T" datetime}} {{printf "%T" (datetime).Year}}`,
		want: `time.Time int`,
	},
	{
		name: "lookupIP literal",
		tmpl: `{{lookupIP "127.0.0.1"}} {{lookupIPV4 "127.0.0.1"}} {{lookupIPV6 "127.0.0.1"}} {{lookupIPV6 "::1"}} {{lookupIPV4 "::1"}} {{lookupIP "::1"}}`,
		want: `[127.0.0.1] [127.0.0.1] [] [::1] [] [::1]`,
	},
	{
		name: "fileExists",
		tmpl: `{{fileExists "/"}} {{fileExists "/nonexistent/herald/x"}}`,
		want: `true false`,
	},
	{
		name: "base64",
		tmpl: `{{base64Encode "Value"}} {{base64Decode (getv "/app/b64")}} {{base64Encode ""}}`,
		want: `VmFsdWU= Value `,
	},
	{
		name: "base64Decode bad",
		tmpl: `{{base64Decode (getv "/app/b64bad")}}`,
		err:  []string{"base64Decode bad:1:2", "illegal base64 data at input byte 0"},
	},
	{
		name: "parseBool",
		tmpl: `{{parseBool (getv "/app/bool")}} {{parseBool "0"}} {{if parseBool "T"}}yes{{end}}`,
		want: `true false yes`,
	},
	{
		name: "parseBool bad",
		tmpl: `{{parseBool "maybe"}}`,
		err:  []string{"parseBool bad:1:2", "strconv.ParseBool: parsing \"maybe\": invalid syntax"},
	},
	{
		name: "atoi",
		tmpl: `{{atoi (getv "/app/num")}} {{add (atoi "40") 2}}`,
		want: `42 42`,
	},
	{
		name: "atoi bad",
		tmpl: `{{atoi (getv "/app/nan")}}`,
		err:  []string{"atoi bad:1:2", "strconv.Atoi: parsing \"4x2\": invalid syntax"},
	},
	{
		name: "reverse getvs",
		tmpl: `{{reverse (getvs "/app/upstream/*")}}`,
		want: `[10.0.0.9:8080 10.0.0.5:8080 10.0.0.1:8080]`,
	},
	{
		name: "reverse ls",
		tmpl: `{{reverse (ls "/deis/services")}}`,
		want: `[srv2 srv1 notaservice key]`,
	},
	{
		name: "reverse gets unchanged",
		tmpl: `{{range reverse (gets "/app/db/*")}}{{.Key}} {{end}}`,
		want: `/app/db/pass /app/db/user `,
	},
	{
		name: "reverse sortKVByLength",
		tmpl: `{{range reverse (sortKVByLength (gets "/app/upstream/*"))}}{{.Key}} {{end}}`,
		want: `/app/upstream/host10 /app/upstream/host2 /app/upstream/host1 `,
	},
	{
		name: "reverse other",
		tmpl: `{{reverse (jsonArray (getv "/app/json/arr"))}} {{reverse "abc"}}`,
		want: `[b a c] abc`,
	},
	{
		name: "reverse in place",
		tmpl: `{{$l := ls "/deis/services"}}{{$r := reverse $l}}{{$l}}`,
		want: `[srv2 srv1 notaservice key]`,
	},
	{
		name: "reverse empty",
		tmpl: `{{reverse (ls "/nope")}}`,
		want: `[]`,
	},
	{
		name: "sortByLength",
		tmpl: `{{sortByLength (split "ccc,a,bb,dd,e,fff" ",")}}`,
		want: `[a e bb dd ccc fff]`,
	},
	{
		name: "sortByLength in place",
		tmpl: `{{$l := split "ccc,a,bb" ","}}{{$_ := sortByLength $l}}{{$l}}`,
		want: `[a bb ccc]`,
	},
	{
		name: "sortKVByLength",
		tmpl: `{{range sortKVByLength (gets "/app/upstream/*")}}{{.Key}} {{end}}`,
		want: `/app/upstream/host1 /app/upstream/host2 /app/upstream/host10 `,
	},
	{
		name: "math",
		tmpl: `{{add 1 2}} {{sub 1 2}} {{mul 3 4}} {{div 7 2}} {{mod 7 2}} {{div -7 2}} {{mod -7 2}}`,
		want: `3 -1 12 3 1 -3 -1`,
	},
	{
		name: "div by zero",
		tmpl: `{{div 1 0}}`,
		err:  []string{"div by zero:1:2", "div 1 0: division by zero"},
	},
	{
		name: "mod by zero",
		tmpl: `{{mod 1 0}}`,
		err:  []string{"mod by zero:1:2", "mod 1 0: division by zero"},
	},
	{
		name: "seq",
		tmpl: `{{seq 3 5}} {{seq 5 3}} {{seq 1 1}} {{range seq 1 3}}{{.}},{{end}}`,
		want: `[3 4 5] [] [1] 1,2,3,`,
	},
	{
		name: "math strings",
		tmpl: `{{add "1" 2}}`,
		err:  []string{"math strings:1:6", "expected integer; found \"1\""},
	},
	{
		name:   "prefix getv",
		prefix: "/app",
		tmpl:   `{{getv "/port"}} {{getv "/db/user"}}`,
		want:   `443 admin`,
	},
	{
		name:   "prefix gets",
		prefix: "/app",
		tmpl: `{{range gets "/db/*"}}{{.Key}}={{.Value}}
{{end}}`,
		want: `/db/pass=s3cret
/db/user=admin
`,
	},
	{
		name:   "prefix ls",
		prefix: "/app",
		tmpl:   `{{ls "/"}} {{ls "/upstream"}} {{lsdir "/upstream"}} {{lsdir "/"}}`,
		want:   `[b64 b64bad bool empty nan num port url] [host1 host10 host2] [host1 host2] []`,
	},
	{
		name:   "prefix trailing slash",
		prefix: "/app/",
		tmpl:   `{{getv "/port"}} {{ls "/db"}}`,
		want:   `443 [pass user]`,
	},
	{
		name:   "prefix without slash",
		prefix: "app",
		tmpl:   `{{getv "/port"}}`,
		want:   `443`,
	},
	{
		name:   "prefix root key",
		prefix: "/app",
		kv:     map[string]string{"/app": "appval", "/app/x": "1", "/app/y/z": "2"},
		tmpl:   `{{getv "/"}} {{exists "/"}} {{ls "/"}} {{gets "/"}}`,
		want:   `appval true [/ x] [{/ appval}]`,
	},
	{
		name:   "prefix missing key error",
		prefix: "/app",
		tmpl:   `{{getv "/nope"}}`,
		err:    []string{"prefix missing key error:1:2", "key does not exist: /nope"},
	},
	{
		name:   "prefix does not leak",
		prefix: "/app",
		tmpl:   `{{exists "/app/port"}} {{ls "/app"}} {{gets "/app/*"}}`,
		want:   `false [] []`,
	},
	{
		name:   "prefix is path boundary",
		prefix: "/app",
		kv:     map[string]string{"/app-b/y": "2", "/app/x": "1", "/apple": "3"},
		tmpl:   `{{ls "/"}}`,
		want:   `[x]`,
	},
	{
		name: "scope getv outside",
		keys: []string{"/app/db"},
		tmpl: `{{getv "/app/port" "dflt"}} {{getv "/app/db/user" "dflt"}} {{exists "/app/port"}}`,
		want: `dflt admin false`,
	},
	{
		name: "scope gets",
		keys: []string{"/app/db"},
		tmpl: `{{gets "/app/*"}} {{gets "/app/*/*"}}`,
		want: `[] [{/app/db/pass s3cret} {/app/db/user admin}]`,
	},
	{
		name: "scope ls",
		keys: []string{"/app/db", "/app/upstream"},
		tmpl: `{{ls "/app"}} {{lsdir "/app"}} {{ls "/"}}`,
		want: `[db upstream] [db upstream] []`,
	},
	{
		name: "scope two prefixes gets",
		keys: []string{"/deis/services", "/app/db", "/app-b"},
		tmpl: `{{range gets "/*/*/*"}}{{.Key}} {{end}}`,
		want: `/app/db/pass /app/db/user /deis/services/key `,
	},
	{
		name: "scope trailing slash",
		keys: []string{"/app/db/"},
		tmpl: `{{getvs "/app/db/*"}} {{exists "/app/port"}}`,
		want: `[admin s3cret] false`,
	},
	{
		name: "scope key",
		keys: []string{"/app/port"},
		tmpl: `{{getv "/app/port"}} {{ls "/app"}}`,
		want: `443 [port]`,
	},
	{
		name:   "scope with prefix",
		prefix: "/app",
		keys:   []string{"/db"},
		tmpl:   `{{getv "/db/user"}} {{getv "/port" "none"}} {{ls "/"}}`,
		want:   `admin none []`,
	},
	{
		name: "scope get missing",
		keys: []string{"/app/db"},
		tmpl: `{{get "/app/port"}}`,
		err:  []string{"scope get missing:1:2", "key does not exist: /app/port"},
	},
	{
		name: "no data",
		tmpl: `{{.}}`,
		want: `<no value>`,
	},
	{
		name: "builtin slice",
		tmpl: `{{slice "hello" 1 3}} {{slice (ls "/deis/services") 1 2}}`,
		want: `el [notaservice]`,
	},
	{
		name: "define template",
		tmpl: `{{define "srv"}}server {{.}}{{end}}{{range ls "/deis/services/srv1"}}{{template "srv" .}}
{{end}}`,
		want: `server node1
server node2
`,
	},
	{
		name: "whitespace trim",
		tmpl: `a
{{- range ls "/deis/services/srv1"}}
  {{.}}
{{- end}}
b
`,
		want: `a
  node1
  node2
b
`,
	},
}
