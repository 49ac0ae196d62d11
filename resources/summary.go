package resources

import (
	"errors"
	"regexp"
	texttemplate "text/template"

	"github.com/heraldhq/herald/template"
)

// templatePos finds where text/template says an execution failed: "t.tmpl:3:5".
var templatePos = regexp.MustCompile(`^template: (\S+?:\d+(?::\d+)?): `)

// Summary describes a failed render for /healthz, which anyone who can reach --listen
// reads: it names the cause's class and the key, file or position concerned, never a
// value or a command's output (a template function's error quotes its arguments, a
// check command prints the file it checks). The whole error is in the log.
func Summary(err error) string {
	if err == nil {
		return ""
	}
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Summary()
	}
	var ke *template.KeyError
	if errors.As(err, &ke) {
		return "template: key does not exist: " + ke.Key
	}
	var ee texttemplate.ExecError
	if errors.As(err, &ee) {
		if m := templatePos.FindStringSubmatch(ee.Error()); m != nil {
			return "template error at " + m[1] + " (the log has the details)"
		}
		return "template error in " + ee.Name + " (the log has the details)"
	}
	// The rest is herald's own text (paths, keys, endpoints, errno), or the registry's
	// answer to a read, as in the backend's state.
	return err.Error()
}
