package backends

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "instances", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The fixtures are byte-for-byte what each writer stores: Curator's Jackson serializer
// (Spring Cloud Zookeeper, Curator 2 and 5), the Curator discovery server's REST example,
// Aurora's executor and Finagle's announcer, zc.zk's register().
func TestParseInstanceFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		key     string
		want    Service
	}{
		{
			fixture: "herald.json",
			key:     "/services/web/web-1",
			want: Service{
				Name: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080,
				Tags:   []string{"v2", "primary"},
				Meta:   map[string]string{"zone": "eu-1", "cpus": "4", "canary": "false"},
				Status: StatusWarning, Healthy: false, Weight: 10,
				Format: FormatHerald, Key: "/services/web/web-1",
			},
		},
		{
			fixture: "herald-ipv6.json",
			key:     "/services/api/a1",
			want: Service{
				Name: "api", ID: "a1", Address: "2001:db8::10", Port: 443, Tags: []string{"tls"},
				Status: StatusPassing, Healthy: true, Format: FormatHerald, Key: "/services/api/a1",
			},
		},
		{
			fixture: "curator-spring-cloud.json",
			key:     "/services/waiter-service/b1fdcb1e-27a8-4409-a703-3458260c450a",
			want: Service{
				Name: "waiter-service", ID: "b1fdcb1e-27a8-4409-a703-3458260c450a",
				Address: "10.133.11.150", Port: 53598,
				Meta:   map[string]string{"instance_status": "UP"},
				Status: StatusPassing, Healthy: true, Format: FormatCurator,
				Key: "/services/waiter-service/b1fdcb1e-27a8-4409-a703-3458260c450a",
			},
		},
		{
			fixture: "curator5-enabled.json",
			key:     "/services/zk-order/bd4d9b0f-24dc-45bd-9a85-d99a248dd332",
			want: Service{
				Name: "zk-order", ID: "bd4d9b0f-24dc-45bd-9a85-d99a248dd332",
				Address: "10.0.0.7", Port: 8003,
				Meta:   map[string]string{"zone": "eu-1", "version": "2.3.0"},
				Status: StatusPassing, Healthy: true, Format: FormatCurator,
				Key: "/services/zk-order/bd4d9b0f-24dc-45bd-9a85-d99a248dd332",
			},
		},
		{
			fixture: "curator-disabled.json",
			key:     "/services/zk-order/5e0c7d5c-2a4f-4f43-9f3e-3c1d4b7d2a11",
			want: Service{
				Name: "zk-order", ID: "5e0c7d5c-2a4f-4f43-9f3e-3c1d4b7d2a11",
				Address: "10.0.0.8", Port: 8003,
				Status: StatusMaintenance, Healthy: false, Format: FormatCurator,
				Key: "/services/zk-order/5e0c7d5c-2a4f-4f43-9f3e-3c1d4b7d2a11",
			},
		},
		{
			fixture: "curator-ssl-only.json",
			key:     "/services/billing/0f5d4c1e-8f1b-4c47-a3f0-6d8a1b9e2c33",
			want: Service{
				Name: "billing", ID: "0f5d4c1e-8f1b-4c47-a3f0-6d8a1b9e2c33",
				Address: "billing-1.internal", Port: 8443,
				Endpoints: map[string]HostPort{"ssl": {"billing-1.internal", 8443}},
				Status:    StatusPassing, Healthy: true, Format: FormatCurator,
				Key: "/services/billing/0f5d4c1e-8f1b-4c47-a3f0-6d8a1b9e2c33",
			},
		},
		{
			fixture: "curator-both-ports.json",
			key:     "/services/billing/9a3c2b1d-7e6f-4a5b-8c9d-0e1f2a3b4c5d",
			want: Service{
				Name: "billing", ID: "9a3c2b1d-7e6f-4a5b-8c9d-0e1f2a3b4c5d",
				Address: "10.0.0.9", Port: 8080,
				Endpoints: map[string]HostPort{"ssl": {"10.0.0.9", 8443}},
				Status:    StatusPassing, Healthy: true, Format: FormatCurator,
				Key: "/services/billing/9a3c2b1d-7e6f-4a5b-8c9d-0e1f2a3b4c5d",
			},
		},
		{
			fixture: "curator-rest-static.json",
			key:     "/discovery/test/ca2fff8e-d756-480c-b59e-8297ff88624b",
			want: Service{
				Name: "test", ID: "ca2fff8e-d756-480c-b59e-8297ff88624b",
				Address: "10.20.30.40", Port: 1234,
				Status: StatusPassing, Healthy: true, Format: FormatCurator,
				Key: "/discovery/test/ca2fff8e-d756-480c-b59e-8297ff88624b",
			},
		},
		{
			fixture: "curator-custom-payload.json",
			key:     "/services/bookService/a1bc97ba-9926-41be-92a4-2fe6b02597b4",
			want: Service{
				Name: "bookService", ID: "a1bc97ba-9926-41be-92a4-2fe6b02597b4",
				Address: "localhost", Port: 8070,
				Status: StatusPassing, Healthy: true, Format: FormatCurator,
				Key: "/services/bookService/a1bc97ba-9926-41be-92a4-2fe6b02597b4",
			},
		},
		{
			fixture: "serverset-aurora.json",
			key:     "/services/web/member_0000000001",
			want: Service{
				Name: "web", ID: "member_0000000001", Address: "192.168.33.7", Port: 15508,
				Endpoints: map[string]HostPort{"aurora": {"192.168.33.7", 15508}, "http": {"192.168.33.7", 15508}},
				Meta:      map[string]string{"shard": "0"},
				Status:    StatusPassing, Healthy: true, Format: FormatServerSet,
				Key: "/services/web/member_0000000001",
			},
		},
		{
			fixture: "serverset-finagle.json",
			key:     "/services/web/member_0000000042",
			want: Service{
				Name: "web", ID: "member_0000000042", Address: "10.1.2.3", Port: 31324,
				Endpoints: map[string]HostPort{
					"health": {"10.1.2.3", 31753}, "aurora": {"10.1.2.3", 31753}, "http": {"10.1.2.3", 31324},
				},
				Meta:   map[string]string{"shard": "6"},
				Status: StatusPassing, Healthy: true, Format: FormatServerSet,
				Key: "/services/web/member_0000000042",
			},
		},
		{
			fixture: "serverset-linkerd.json",
			key:     "/discovery/pong/member_0000000000",
			want: Service{
				Name: "pong", ID: "member_0000000000", Address: "127.0.0.1", Port: 8002,
				Status: StatusPassing, Healthy: true, Format: FormatServerSet,
				Key: "/discovery/pong/member_0000000000",
			},
		},
		{
			fixture: "zczk-pid.json",
			key:     "/fooservice/providers/192.168.0.42:8080",
			want: Service{
				Name: "providers", ID: "192.168.0.42:8080", Address: "192.168.0.42", Port: 8080,
				Meta:   map[string]string{"pid": "9999"},
				Status: StatusPassing, Healthy: true, Format: FormatHostPort,
				Key: "/fooservice/providers/192.168.0.42:8080",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			root := tt.key[:strings.LastIndexByte(tt.key[:strings.LastIndexByte(tt.key, '/')], '/')]
			got, err := ParseInstance(root, tt.key, readFixture(t, tt.fixture))
			if err != nil {
				t.Fatalf("ParseInstance: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseInstanceValues(t *testing.T) {
	tests := []struct {
		name     string
		key      string
		value    string
		wantAddr string
		wantPort int
		wantID   string
		wantFmt  string
	}{
		{"ipv4", "/services/web/a", "10.0.0.1:80", "10.0.0.1", 80, "a", FormatHostPort},
		{"hostname", "/services/web/a", "web-1.example.com:8080", "web-1.example.com", 8080, "a", FormatHostPort},
		{"trailing newline from echo", "/services/web/a", "10.0.0.1:80\n", "10.0.0.1", 80, "a", FormatHostPort},
		{"bracketed ipv6", "/services/web/a", "[2001:db8::1]:443", "2001:db8::1", 443, "a", FormatHostPort},
		{"unbracketed ipv6 (go-zero)", "/services/web/a", "2001:db8::1:443", "2001:db8::1", 443, "a", FormatHostPort},
		{"ipv6 zone", "/services/web/a", "[fe80::1%eth0]:80", "fe80::1%eth0", 80, "a", FormatHostPort},
		{"port zero", "/services/web/a", "10.0.0.1:0", "10.0.0.1", 0, "a", FormatHostPort},
		{"zc.zk empty data", "/services/web/10.0.0.1:80", "", "10.0.0.1", 80, "10.0.0.1:80", FormatHostPort},
		{"zc.zk unbracketed ipv6 name", "/services/web/::1:8080", `{"pid":1}`, "::1", 8080, "::1:8080", FormatHostPort},
		{"zc.zk hostname", "/services/web/app1.example.com:81", `{"pid":1,"version":"1.2"}`, "app1.example.com", 81, "app1.example.com:81", FormatHostPort},
		{"herald without id uses key", "/services/web/x9", `{"address":"h","port":1}`, "h", 1, "x9", FormatHerald},
		{"herald missing port is 0", "/services/web/x9", `{"address":"h"}`, "h", 0, "x9", FormatHerald},
		{"herald null port is 0", "/services/web/x9", `{"address":"h","port":null}`, "h", 0, "x9", FormatHerald},
		{"herald ignores unknown fields", "/services/web/x9", `{"address":"h","port":2,"extra":{"a":1}}`, "h", 2, "x9", FormatHerald},
		{"herald name in value does not win", "/services/web/x9", `{"name":"other","address":"h","port":3}`, "h", 3, "x9", FormatHerald},
		{"curator without port or sslPort", "/services/web/u1", `{"name":"web","id":"u1","address":"h","port":null,"sslPort":null,"serviceType":"DYNAMIC"}`, "h", 0, "u1", FormatCurator},
		{"minimal curator reads as herald", "/services/web/k", `{"name":"web","id":"u2","address":"h","port":9}`, "h", 9, "u2", FormatHerald},
		{"root slash", "/services/web/a", "10.0.0.1:80", "10.0.0.1", 80, "a", FormatHostPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInstance("/services", tt.key, []byte(tt.value))
			if err != nil {
				t.Fatalf("ParseInstance(%q, %q): %v", tt.key, tt.value, err)
			}
			if got.Address != tt.wantAddr || got.Port != tt.wantPort || got.ID != tt.wantID || got.Format != tt.wantFmt {
				t.Errorf("got %s:%d id=%q format=%s, want %s:%d id=%q format=%s",
					got.Address, got.Port, got.ID, got.Format, tt.wantAddr, tt.wantPort, tt.wantID, tt.wantFmt)
			}
			if got.Name != "web" || got.Key != tt.key || got.Status != StatusPassing || !got.Healthy {
				t.Errorf("got name=%q key=%q status=%q healthy=%v", got.Name, got.Key, got.Status, got.Healthy)
			}
		})
	}
}

func TestParseInstanceRoots(t *testing.T) {
	tests := []struct{ root, key string }{
		{"/", "/web/a"},
		{"", "/web/a"},
		{"/services/", "/services/web/a"},
		{"services", "/services/web/a"},
		{"/a/b/c", "/a/b/c/web/a"},
	}
	for _, tt := range tests {
		got, err := ParseInstance(tt.root, tt.key, []byte("10.0.0.1:80"))
		if err != nil {
			t.Errorf("root %q key %q: %v", tt.root, tt.key, err)
			continue
		}
		if got.Name != "web" || got.ID != "a" {
			t.Errorf("root %q key %q: name=%q id=%q, want web, a", tt.root, tt.key, got.Name, got.ID)
		}
	}
}

func TestParseInstanceErrors(t *testing.T) {
	const key = "/services/web/i1"
	tests := []struct {
		name  string
		key   string
		value string
		want  string // substring of the error
	}{
		{"herald empty address", key, `{"address":"","port":80}`, "empty address"},
		{"herald no address", key, `{"port":80,"tags":["a"]}`, "empty address"},
		{"herald blank address", key, `{"address":"   ","port":80}`, "empty address"},
		{"herald port too big", key, `{"address":"h","port":65536}`, "port 65536 out of range"},
		{"herald negative port", key, `{"address":"h","port":-1}`, "port -1 out of range"},
		{"herald port as non-digit string", key, `{"address":"h","port":"http"}`, `field "port": want an integer or a string of digits: port "http" is not a decimal number`},
		{"herald port as signed string", key, `{"address":"h","port":"-1"}`, `field "port": want an integer or a string of digits`},
		{"herald port as empty string", key, `{"hostname":"h","port":""}`, `field "port": want an integer or a string of digits: empty port`},
		{"herald port as object", key, `{"address":"h","port":{}}`, `field "port": want an integer or a string of digits`},
		{"registrator PublicPort as text", key, `{"IP":"h","PublicPort":"x"}`, `field "PublicPort"`},
		{"registrator Attrs nested", key, `{"IP":"h","PublicPort":80,"Attrs":{"a":[1]}}`, `Attrs "a": want a string, number or boolean`},
		{"hostname empty and key not host:port", key, `{"hostname":"","port":"3000"}`, "empty address"},
		{"herald fractional port", key, `{"address":"h","port":80.5}`, `field "port": want an integer`},
		{"herald huge port", key, `{"address":"h","port":1e30}`, `field "port": want an integer`},
		{"herald address with port", key, `{"address":"10.0.0.1:80","port":80}`, "holds a port"},
		{"herald address with space", key, `{"address":"10.0.0.1 10.0.0.2","port":80}`, "not a host name or IP"},
		{"herald address url", key, `{"address":"http://h","port":80}`, "holds a port"},
		{"herald address slash", key, `{"address":"h/x","port":80}`, "not a host name or IP"},
		{"herald bad brackets", key, `{"address":"[h]","port":80}`, "not a host name or IP"},
		{"herald unknown status", key, `{"address":"h","port":80,"status":"up"}`, `status "up"`},
		{"herald negative weight", key, `{"address":"h","port":80,"weight":-2}`, "weight -2 is negative"},
		{"herald tags not array", key, `{"address":"h","port":80,"tags":"a,b"}`, `field "tags": want an array of strings`},
		{"herald nested meta", key, `{"address":"h","port":80,"meta":{"a":{"b":1}}}`, `meta "a": want a string, number or boolean`},
		{"herald address not string", key, `{"address":10,"port":80}`, `field "address": want a string`},
		{"invalid JSON", key, `{"address":"h",}`, "invalid JSON at byte"},
		{"truncated JSON", key, `{"address":"h","port":80`, "invalid JSON"},
		{"JSON then garbage", key, `{"address":"h","port":80} x`, "invalid JSON"},
		{"JSON array", key, `[{"address":"h"}]`, "not host:port"},
		{"plain host without port", key, "10.0.0.1", "not host:port"},
		{"plain empty port", key, "10.0.0.1:", "empty port"},
		{"plain empty host", key, ":80", "empty host"},
		{"plain port too big", key, "10.0.0.1:70000", "out of range"},
		{"plain port with sign", key, "10.0.0.1:+80", "not a decimal number"},
		{"plain port negative", key, "10.0.0.1:-1", "not a decimal number"},
		{"plain port name", key, "10.0.0.1:http", "not a decimal number"},
		{"plain two colons not ip", key, "a:b:80", "not host:port"},
		{"plain url", key, "http://10.0.0.1:80", "not host:port"},
		{"plain with spaces", key, "10.0.0.1:80 10.0.0.2:80", "not host:port"},
		{"plain hostname with space", key, "web 1:80", "not a host name or IP"},
		{"binary", key, "\x00\x01\x02\x03", "binary"},
		{"not utf8", key, "10.0.0.1:80\xff", "binary"},
		{"thrift serverset", key, "\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x0810.0.0.1", "binary"},
		{"too large", key, `{"address":"h","port":80,"meta":{"x":"` + strings.Repeat("a", MaxValueSize) + `"}}`, "more than the 1048576 accepted"},
		{"curator empty address", key, `{"name":"web","id":"i1","address":null,"port":80,"sslPort":null,"serviceType":"DYNAMIC"}`, "empty address"},
		{"curator ssl port out of range", key, `{"name":"web","id":"i1","address":"h","port":80,"sslPort":70000,"serviceType":"DYNAMIC"}`, `endpoint "ssl": port 70000 out of range`},
		{"curator nested metadata", key, `{"name":"web","id":"i1","address":"h","port":80,"payload":{"metadata":{"a":[1]}}}`, `payload.metadata "a"`},
		{"curator metadata not object", key, `{"name":"web","id":"i1","address":"h","port":80,"payload":{"metadata":"x"}}`, "payload"},
		{"curator enabled not bool", key, `{"name":"web","id":"i1","address":"h","port":80,"enabled":"yes"}`, `field "enabled": want a boolean`},
		{"serverset null endpoint", key, `{"status":"ALIVE","serviceEndpoint":null}`, "serviceEndpoint is null"},
		{"serverset no port", key, `{"status":"ALIVE","serviceEndpoint":{"host":"h"}}`, "serviceEndpoint has no port"},
		{"serverset empty host", key, `{"status":"ALIVE","serviceEndpoint":{"host":"","port":1}}`, "empty address"},
		{"serverset port out of range", key, `{"status":"ALIVE","serviceEndpoint":{"host":"h","port":99999}}`, "port 99999 out of range"},
		{"serverset bad additional endpoint", key, `{"status":"ALIVE","serviceEndpoint":{"host":"h","port":1},"additionalEndpoints":{"http":{"host":"h"}}}`, `additionalEndpoints "http" has no port`},
		{"serverset additional endpoint bad host", key, `{"status":"ALIVE","serviceEndpoint":{"host":"h","port":1},"additionalEndpoints":{"http":{"host":"a b","port":2}}}`, `endpoint "http": address "a b"`},
		{"serverset port as string", key, `{"status":"ALIVE","serviceEndpoint":{"host":"h","port":"1"}}`, `want an integer`},
		{"empty value, id not host:port", key, "", `empty value, and the key's last segment "i1" is not host:port`},
		{"whitespace value, id not host:port", key, " \n", "empty value"},
		{"zc.zk-like JSON, id not host:port", key, `{"pid":1}`, "JSON value has no address"},
		{"key outside root", "/other/web/i1", "10.0.0.1:80", "is not /services/<name>/<id>"},
		{"key too deep", "/services/web/i1/x", "10.0.0.1:80", "is not /services/<name>/<id>"},
		{"key too shallow", "/services/web", "10.0.0.1:80", "is not /services/<name>/<id>"},
		{"key empty name", "/services//i1", "10.0.0.1:80", "is not /services/<name>/<id>"},
		{"key empty id", "/services/web/", "10.0.0.1:80", "is not /services/<name>/<id>"},
		{"key prefix not on boundary", "/servicesx/web/i1", "10.0.0.1:80", "is not /services/<name>/<id>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInstance("/services", tt.key, []byte(tt.value))
			if err == nil {
				t.Fatalf("ParseInstance(%q) = %+v, want error containing %q", tt.value, got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q does not name the key %q", err, tt.key)
			}
			if errors.Is(err, ErrNotAlive) {
				t.Errorf("malformed value reported as not alive: %v", err)
			}
		})
	}
}

func TestParseInstanceNotAlive(t *testing.T) {
	tests := []struct{ name, value string }{
		{"starting fixture", string(readFixture(t, "serverset-starting.json"))},
		{"dead fixture", string(readFixture(t, "serverset-dead.json"))},
		{"stopping", `{"status":"STOPPING","serviceEndpoint":{"host":"h","port":1}}`},
		{"no status", `{"serviceEndpoint":{"host":"h","port":1}}`},
		{"lower case alive", `{"status":"alive","serviceEndpoint":{"host":"h","port":1}}`},
		// A member that is going away may be half-written; that is still not a warning.
		{"dead without endpoint", `{"status":"DEAD","serviceEndpoint":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseInstance("/services", "/services/web/member_1", []byte(tt.value))
			if !errors.Is(err, ErrNotAlive) {
				t.Fatalf("err = %v, want ErrNotAlive", err)
			}
			if !strings.Contains(err.Error(), "/services/web/member_1") {
				t.Errorf("error %q does not name the key", err)
			}
		})
	}
}

func TestParseHostPort(t *testing.T) {
	tests := []struct {
		in      string
		host    string
		port    int
		wantErr bool
	}{
		{"10.0.0.1:80", "10.0.0.1", 80, false},
		{"localhost:65535", "localhost", 65535, false},
		{"[::1]:80", "::1", 80, false},
		{"::1:80", "::1", 80, false},
		{"::ffff:10.0.0.1:80", "::ffff:10.0.0.1", 80, false},
		{"2001:db8::1:8080", "2001:db8::1", 8080, false},
		{"h:00080", "h", 80, false},
		{"h:65536", "", 0, true},
		{"h:123456", "", 0, true},
		{"h", "", 0, true},
		{"", "", 0, true},
		{":80", "", 0, true},
		{"h:", "", 0, true},
		{"a:b:80", "", 0, true},
		{"[::1]", "", 0, true},
		{"10.0.0.1:80:90", "", 0, true},
	}
	for _, tt := range tests {
		host, port, err := ParseHostPort(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseHostPort(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if host != tt.host || port != tt.port {
			t.Errorf("ParseHostPort(%q) = %q, %d, want %q, %d", tt.in, host, port, tt.host, tt.port)
		}
	}
}

func TestNormalizeService(t *testing.T) {
	tests := []struct {
		name    string
		in      Service
		want    Service
		wantErr string
	}{
		{
			name: "defaults status",
			in:   Service{Name: "web", Address: " 10.0.0.1 ", Port: 80},
			want: Service{Name: "web", Address: "10.0.0.1", Port: 80, Status: StatusPassing, Healthy: true},
		},
		{
			name: "status case",
			in:   Service{Name: "web", Address: "h", Status: "Critical"},
			want: Service{Name: "web", Address: "h", Status: StatusCritical},
		},
		{
			name: "unbrackets endpoints",
			in:   Service{Name: "web", Address: "[::1]", Endpoints: map[string]HostPort{"admin": {"[::1]", 9}}},
			want: Service{Name: "web", Address: "::1", Endpoints: map[string]HostPort{"admin": {"::1", 9}}, Status: StatusPassing, Healthy: true},
		},
		{name: "no name", in: Service{Address: "h"}, wantErr: "empty service name"},
		{name: "endpoint port", in: Service{Name: "w", Address: "h", Endpoints: map[string]HostPort{"x": {"h", -5}}}, wantErr: `endpoint "x": port -5`},
		{name: "endpoint host", in: Service{Name: "w", Address: "h", Endpoints: map[string]HostPort{"x": {"", 5}}}, wantErr: `endpoint "x": empty address`},
		{name: "control char", in: Service{Name: "w", Address: "h\x7f"}, wantErr: "not a host name"},
		{name: "too long", in: Service{Name: "w", Address: strings.Repeat("a", 256)}, wantErr: "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeService(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestServicesUnder(t *testing.T) {
	kvs := map[string]string{
		"/services/web/b":                 `{"address":"10.0.0.2","port":80,"tags":["b"]}`,
		"/services/web/a":                 `{"address":"10.0.0.1","port":80,"tags":["a"]}`,
		"/services/web/c":                 "10.0.0.1:79",
		"/services/web/broken":            `{"address":"","port":80}`,
		"/services/web/member_0000000003": string(readFixture(t, "serverset-dead.json")),
		"/services/web":                   "parent node data",
		"/services/web/a/extra":           "a level the layout does not have: reported",
		"/services/db/10.0.1.1:5432":      "",
		"/services/empty/x":               "garbage",
		"/servicesx/web/z":                "10.9.9.9:1",
		"/config/web/z":                   "10.9.9.9:1",
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var reported []string
	cfg := Config{ServicesRoot: "/services", OnMalformed: func(key string, err error) { reported = append(reported, key) }}
	got := ServicesUnder(cfg, kvs, log)
	// The DEAD ServerSet member is not malformed: the two bad values and the key deeper
	// than the layout are reported; the parent node's data is not.
	if want := []string{"/services/empty/x", "/services/web/a/extra", "/services/web/broken"}; !reflect.DeepEqual(reported, want) {
		t.Errorf("reported malformed %q, want %q", reported, want)
	}

	names := func(list []Service) []string {
		var out []string
		for _, s := range list {
			out = append(out, s.HostPort()+"/"+s.ID)
		}
		return out
	}
	if want := []string{"10.0.0.1:79/c", "10.0.0.1:80/a", "10.0.0.2:80/b"}; !reflect.DeepEqual(names(got["web"]), want) {
		t.Errorf("web = %v, want %v", names(got["web"]), want)
	}
	if want := []string{"10.0.1.1:5432/10.0.1.1:5432"}; !reflect.DeepEqual(names(got["db"]), want) {
		t.Errorf("db = %v, want %v", names(got["db"]), want)
	}
	if _, ok := got["empty"]; ok || len(got) != 2 {
		t.Errorf("got services %v, want only web and db", got)
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var warns, debugs []string
	for _, l := range lines {
		switch {
		case strings.Contains(l, "level=WARN"):
			warns = append(warns, l)
		case strings.Contains(l, "level=DEBUG"):
			debugs = append(debugs, l)
		}
	}
	if len(warns) != 3 || !strings.Contains(warns[0], "key=/services/empty/x") ||
		!strings.Contains(warns[1], "key=/services/web/a/extra") || !strings.Contains(warns[1], "3 levels below /services, the layout has 2") ||
		!strings.Contains(warns[2], "key=/services/web/broken") {
		t.Errorf("warnings = %q, want one each for /services/empty/x, /services/web/a/extra (with the layout) and /services/web/broken, in key order", warns)
	}
	if len(debugs) != 1 || !strings.Contains(debugs[0], "key=/services/web/member_0000000003") {
		t.Errorf("debug lines = %q, want one for the DEAD member", debugs)
	}
	for _, l := range lines {
		if strings.Contains(l, "servicesx") || strings.Contains(l, "/config/") || strings.Contains(l, "parent node") {
			t.Errorf("key outside <root>/<name>/<id> was logged: %s", l)
		}
	}
}

func TestServicesUnderNilLoggerAndEmpty(t *testing.T) {
	if got := ServicesUnder(Config{}, nil, nil); len(got) != 0 {
		t.Errorf("got %v for no keys", got)
	}
	got := ServicesUnder(Config{ServicesRoot: "/"}, map[string]string{"/web/1": "h:1", "/web/2": "bad"}, nil)
	if len(got["web"]) != 1 || got["web"][0].Address != "h" {
		t.Errorf("got %+v", got)
	}
}

func TestServiceSummaries(t *testing.T) {
	in := map[string][]Service{
		"web": {{Name: "web", Tags: []string{"v2", "a"}}, {Name: "web", Tags: []string{"a", "z"}}},
		"db":  {{Name: "db"}},
		"api": {{Name: "api", Tags: []string{"x"}}},
	}
	want := []ServiceSummary{
		{Name: "api", Tags: []string{"x"}},
		{Name: "db"},
		{Name: "web", Tags: []string{"a", "v2", "z"}},
	}
	if got := ServiceSummaries(in); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := ServiceSummaries(nil); got == nil || len(got) != 0 {
		t.Errorf("ServiceSummaries(nil) = %#v, want empty non-nil", got)
	}
}
