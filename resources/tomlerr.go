package resources

import (
	"regexp"
	"strconv"
	"strings"
)

// BurntSushi/toml reports a value of the wrong type in Go's terms ("type mismatch for
// struct { Src string ... }: expected table but found []map[string]any"); users wrote
// TOML. tomlTypeError restates such an error as "KEY: want X, found Y" in TOML's terms.
var (
	tomlCtxRe      = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)
	tomlMismatchRe = regexp.MustCompile(`^type mismatch for .*: expected table but found (\S+)$`)
	tomlBadTypeRe  = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type (\S+)$`)
)

func tomlTypeError(err error) (line int, msg string, ok bool) {
	m := tomlCtxRe.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, "", false
	}
	line, _ = strconv.Atoi(m[1])
	key, rest := m[2], m[3]
	if mm := tomlMismatchRe.FindStringSubmatch(rest); mm != nil {
		return line, key + ": want a table [" + key + "], found " + tomlKind(mm[1], key), true
	}
	if mm := tomlBadTypeRe.FindStringSubmatch(rest); mm != nil {
		return line, key + ": want " + tomlKind(mm[2], key) + ", found " + tomlKind(mm[1], key), true
	}
	return 0, "", false
}

// tomlKind names a Go type of BurntSushi/toml's messages as the TOML it stands for.
func tomlKind(goType, key string) string {
	switch {
	case strings.HasPrefix(goType, "[]map["):
		return "an array of tables [[" + key + "]]"
	case strings.HasPrefix(goType, "map["):
		return "a table"
	case strings.HasPrefix(goType, "[]"), goType == "slice", goType == "array":
		return "an array"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), goType == "integer":
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a float"
	case goType == "bool", goType == "boolean":
		return "a boolean"
	case strings.Contains(goType, "Time"), strings.Contains(goType, "Local"):
		return "a date or time"
	}
	return "a value of another type"
}

// KeyLine is the 1-based line of raw (a TOML document) where key is set (key = ...) or
// its table starts ([key], [[key]], [key.sub]); 0 when not found. BurntSushi/toml keeps
// key positions to itself, and errors after decoding (a bad value, not bad syntax)
// should still name the line.
func KeyLine(raw []byte, key string) int {
	q := regexp.QuoteMeta(key)
	re := regexp.MustCompile(`^\s*(?:"?` + q + `"?\s*=|\[\[?\s*"?` + q + `"?\s*[\].])`)
	for i, l := range strings.Split(string(raw), "\n") {
		if re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}
