package main

import (
	"fmt"
	"io"
	"strings"
)

// roff escapes text for the man page: backslashes, hyphens (so that --flags copy and
// paste as ASCII), and a leading dot or quote that roff would read as a request.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, `-`, `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// writeMan prints herald(1), from the same sources as --help (see docs.go).
func writeMan(w io.Writer) {
	b := readBuildInfo()
	day, _, _ := strings.Cut(b.Date, "T")
	fmt.Fprintf(w, ".TH HERALD 1 %q %q \"User Commands\"\n", day, "herald "+b.Version)
	fmt.Fprint(w, ".SH NAME\nherald \\- keeps config files true to what a service registry knows\n")
	fmt.Fprint(w, ".SH SYNOPSIS\n")
	for _, c := range commands() {
		fmt.Fprintf(w, ".B herald %s\n", c.name)
		if c.synopsis != "" {
			fmt.Fprintln(w, roff(c.synopsis))
		}
		fmt.Fprint(w, ".br\n")
	}
	fmt.Fprint(w, ".SH DESCRIPTION\n", roff(`herald reads keys and service lists from etcd v3, ZooKeeper or Consul (or a YAML/JSON file, or the environment), renders Go templates bound by confd's TOML resource files (conf.d/*.toml and templates/ below --confdir), writes each file atomically, validates it with its check_cmd and runs its reload_cmd.`), "\n")
	fmt.Fprint(w, ".PP\n", roff(`Every global flag is also a HERALD_* environment variable and a herald.toml key (with '_' for '-'); a flag beats the variable, which beats the file, which beats the default.`), "\n")
	fmt.Fprint(w, ".SH COMMANDS\n")
	for _, c := range commands() {
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", roff(c.name), roff(c.summary))
	}
	_, global := commandFlags("render")
	fmt.Fprint(w, ".SH GLOBAL OPTIONS\n")
	manFlags(w, global)
	for _, c := range commands() {
		if own, _ := commandFlags(c.name); len(own) > 0 {
			fmt.Fprintf(w, ".SH %s OPTIONS\n", strings.ToUpper(c.name))
			manFlags(w, own)
		}
	}
	fmt.Fprint(w, ".SH ENVIRONMENT\n.TP\n.B NOTIFY_SOCKET\n", roff("set by systemd for Type=notify units: watch and register report READY=1, RELOADING=1, STOPPING=1 and STATUS= to it"),
		"\n.TP\n.B WATCHDOG_USEC\n", roff("set by systemd's WatchdogSec=: watch and register send WATCHDOG=1 from their main loop at half this interval"), "\n")
	fmt.Fprint(w, ".SH FILES\n.TP\n.I /etc/herald/herald.toml\n", roff("settings, read when it exists (--config)"),
		"\n.TP\n.I /etc/herald/conf.d/\n", roff("resource files (TOML, confd's format)"),
		"\n.TP\n.I /etc/herald/templates/\n", roff("their templates"), "\n")
	fmt.Fprint(w, ".SH SEE ALSO\n.BR systemd.service (5),\n.BR sd_notify (3)\n")
}

func manFlags(w io.Writer, ds []flagDoc) {
	for _, d := range ds {
		names := make([]string, len(d.names))
		for i, n := range d.names {
			names[i] = `\-\-` + roff(n)
		}
		fmt.Fprintf(w, ".TP\n.B %s\n%s", strings.Join(names, ", "), roff(d.usage))
		if d.def != "" {
			fmt.Fprintf(w, " (default %s)", roff(d.def))
		}
		if d.env != "" {
			fmt.Fprintf(w, " [%s]", roff(d.env))
		}
		fmt.Fprint(w, "\n")
	}
}
