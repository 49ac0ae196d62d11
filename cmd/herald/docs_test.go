package main

import (
	"flag"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var flagInHelp = regexp.MustCompile(`--[a-z][a-z0-9_-]*`)

// Every flag that `herald CMD -h` lists is completed for CMD by every shell and documented
// in the man page, and every command of `herald help` is completed.
func TestCompletionAndManCoverHelp(t *testing.T) {
	_, help, _ := herald(t, nil, "help")
	_, bash, _ := herald(t, nil, "completion", "bash")
	_, zsh, _ := herald(t, nil, "completion", "zsh")
	_, fish, _ := herald(t, nil, "completion", "fish")
	_, man, _ := herald(t, nil, "man")
	cmds := commands()
	if len(cmds) < 10 {
		t.Fatalf("commands() found %d commands in usage", len(cmds))
	}
	for _, c := range cmds {
		if !strings.Contains(help, "herald "+c.name) || !strings.Contains(man, ".B "+c.name+"\n") ||
			!strings.Contains(zsh, "'"+c.name+":") || !strings.Contains(fish, "-a "+c.name+" ") ||
			!regexp.MustCompile(`compgen -W "[^"]*\b`+c.name+`\b`).MatchString(bash) {
			t.Errorf("command %s missing from completion or man page", c.name)
		}
		if slices.Contains([]string{"version", "completion", "man"}, c.name) {
			continue
		}
		code, _, stderr := herald(t, nil, c.name, "-h")
		flags := flagInHelp.FindAllString(stderr, -1)
		if c.name == "confd" { // its -h prints nothing, as confd's; its flags are confd's
			(&confdConfig{}).flags().VisitAll(func(f *flag.Flag) { flags = append(flags, "--"+f.Name) })
		}
		if code != 0 || len(flags) < 5 {
			t.Fatalf("herald %s -h: %d, %d flags:\n%s", c.name, code, len(flags), stderr)
		}
		bashLine := regexp.MustCompile(`(?m)^    ` + c.name + `\) opts="([^"]*)"`).FindStringSubmatch(bash)
		if bashLine == nil {
			t.Fatalf("bash: no case for %s", c.name)
		}
		for _, f := range flags {
			if strings.HasPrefix(f, "--") && strings.Contains(stderr, "alias of "+f) {
				continue
			}
			if !slices.Contains(strings.Fields(bashLine[1]), f) {
				t.Errorf("bash completion of %s lacks %s", c.name, f)
			}
			if !strings.Contains(zsh, "'"+f+"[") {
				t.Errorf("zsh completion lacks %s", f)
			}
			if !strings.Contains(fish, "'__fish_seen_subcommand_from "+c.name+"' -l "+f[2:]+" ") {
				t.Errorf("fish completion of %s lacks %s", c.name, f)
			}
			if !strings.Contains(man, `\-\-`+strings.ReplaceAll(f[2:], "-", `\-`)) {
				t.Errorf("man page lacks %s", f)
			}
		}
	}
}

// The bash script, loaded into a real bash, completes commands and flags.
func TestBashCompletionCompletes(t *testing.T) {
	_, script, _ := herald(t, nil, "completion", "bash")
	for words, want := range map[string]string{
		"herald re":             "render register",
		"herald watch --back":   "--backend",
		"herald register --che": "--check --check-cmd --check-fall --check-interval --check-rise --check-timeout",
	} {
		out, err := exec.Command("bash", "-c", script+`
COMP_WORDS=(`+words+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _herald; echo "${COMPREPLY[*]}"`).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%q: got %q (%v), want %q", words, out, err, want)
		}
	}
	if code, _, _ := herald(t, nil, "completion", "tcsh"); code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", code)
	}
}
