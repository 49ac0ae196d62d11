package resources

import (
	"errors"
	"path/filepath"
	"strings"
)

// ResourceSet is a fresh load of the resource files, for hot reload. Resources of files
// listed in Failed, or below a directory in FailedDirs (conf.d itself when it could not
// be read at all), keep running in their previous version.
type ResourceSet struct {
	Resources  []*Resource
	Failed     map[string]bool // by resource file
	FailedDirs []string
	// Err is what the load found wrong (nil: nothing); /healthz reports it until a
	// load succeeds.
	Err error
}

// NewResourceSet sorts a Load's result for a hot reload: which files and directories
// failed, so that their resources keep their previous version.
func NewResourceSet(rs []*Resource, err error) ResourceSet {
	set := ResourceSet{Resources: rs, Failed: map[string]bool{}, Err: err}
	for _, e := range flattenErrors(err) {
		var re *Error
		switch {
		case !errors.As(e, &re):
		case re.Dir:
			set.FailedDirs = append(set.FailedDirs, re.File)
		default:
			set.Failed[re.File] = true
		}
	}
	return set
}

// Keeps reports whether a resource file failed in this load, itself or through its
// directory.
func (set ResourceSet) Keeps(file string) bool {
	if set.Failed[file] {
		return true
	}
	for _, d := range set.FailedDirs {
		if strings.HasPrefix(file, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// flattenErrors unpacks errors.Join trees.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}
