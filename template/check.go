package template

import (
	"errors"
	"text/template"
)

// Check renders the template once against an empty store in which a missing key reads
// as "" (or getv's default), to find what fails on every run whatever the data holds:
// an undefined {{template "x"}}, a wrong number of arguments, an argument of the wrong
// type, a field of the nil data, ranging over a string. Those errors name the file and
// line. An error a function returns (atoi of "", json of "", index out of range)
// depends on the data, so it is not reported; the check stops there, since
// text/template cannot run past it. Paths the empty store does not take (a range over
// no keys, an if exists) are not checked.
func (t *Template) Check() error { return t.CheckItem(nil) }

// CheckItem is Check for a fan-out resource's template, whose dot is an item (see
// Each.Sample).
func (t *Template) CheckItem(item any) error {
	_, _, err := t.Execute(MapSource{}, Options{missingIsEmpty: true, Data: item})
	if err == nil || dataDependent(err) {
		return nil
	}
	return err
}

// dataDependent says whether err is a function's own error: text/template wraps those
// ("error calling atoi: ...", also for a recovered panic), and only those.
func dataDependent(err error) bool {
	var ee template.ExecError
	return errors.As(err, &ee) && errors.Unwrap(ee.Err) != nil
}
