package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A node is one value of a YAML or JSON document, reduced to what herald needs: maps keep
// their keys in order (duplicates included, so they can be reported), scalars are
// already rendered as strings, and every node knows its line.
type node struct {
	kind  kind
	line  int
	value string // scalars: rendered (see renderYAMLScalar, renderJSONNumber)
	tag   string // scalars: str, int, float, bool or null
	keys  []string
	vals  []*node // map values (parallel to keys) or list items
}

type kind int

const (
	scalarNode kind = iota
	mapNode
	listNode
)

const (
	maxDepth = 100
	// maxNodes bounds the work one file can cause, YAML alias expansion included.
	maxNodes = 1_000_000
)

// lineError is an error at a line of the file being read; the file name is added by
// the caller.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }

func errAt(line int, format string, args ...any) error {
	return &lineError{line, fmt.Errorf(format, args...)}
}

// parseYAML reads every document of a YAML stream; several documents are merged as if
// they were one (a key in two of them is a conflict, reported later).
func parseYAML(data []byte) ([]*node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*node
	budget := maxNodes
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			// yaml.v3 errors read "yaml: line N: ..." and so already name the line.
			return nil, err
		}
		n, err := fromYAML(&doc, 0, &budget)
		if err != nil {
			return nil, err
		}
		docs = append(docs, n)
	}
}

func fromYAML(y *yaml.Node, depth int, budget *int) (*node, error) {
	if depth > maxDepth {
		return nil, errAt(y.Line, "nested deeper than %d levels (or an alias refers to itself)", maxDepth)
	}
	if *budget--; *budget < 0 {
		return nil, errAt(y.Line, "more than %d values, lists and maps (aliases expanded)", maxNodes)
	}
	switch y.Kind {
	case yaml.DocumentNode:
		if len(y.Content) == 0 {
			return &node{kind: scalarNode, tag: "null", line: y.Line}, nil
		}
		return fromYAML(y.Content[0], depth+1, budget)
	case yaml.AliasNode:
		if y.Alias == nil {
			return nil, errAt(y.Line, "unknown alias *%s", y.Value)
		}
		n, err := fromYAML(y.Alias, depth+1, budget)
		if err != nil {
			return nil, err
		}
		return n, nil
	case yaml.ScalarNode:
		v, tag := renderYAMLScalar(y)
		return &node{kind: scalarNode, line: y.Line, value: v, tag: tag}, nil
	case yaml.SequenceNode:
		n := &node{kind: listNode, line: y.Line}
		for _, c := range y.Content {
			cn, err := fromYAML(c, depth+1, budget)
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, cn)
		}
		return n, nil
	case yaml.MappingNode:
		return yamlMapping(y, depth, budget)
	default:
		return nil, errAt(y.Line, "unsupported YAML node")
	}
}

// yamlMapping converts a mapping, applying merge keys (<<: *base): merged entries come
// first and lose to the mapping's own keys and to earlier merges, as YAML specifies.
func yamlMapping(y *yaml.Node, depth int, budget *int) (*node, error) {
	n := &node{kind: mapNode, line: y.Line}
	var merged []*node
	for i := 0; i+1 < len(y.Content); i += 2 {
		k, v := y.Content[i], y.Content[i+1]
		for k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return nil, errAt(k.Line, "a key must be a string, not a list or mapping")
		}
		if k.Tag == "!!merge" {
			m, err := fromYAML(v, depth+1, budget)
			if err != nil {
				return nil, err
			}
			switch m.kind {
			case mapNode:
				merged = append(merged, m)
			case listNode:
				for _, item := range m.vals {
					if item.kind != mapNode {
						return nil, errAt(item.line, "<< merges mappings only")
					}
					merged = append(merged, item)
				}
			default:
				return nil, errAt(v.Line, "<< merges mappings only")
			}
			continue
		}
		cv, err := fromYAML(v, depth+1, budget)
		if err != nil {
			return nil, err
		}
		n.keys = append(n.keys, k.Value)
		n.vals = append(n.vals, cv)
	}
	if len(merged) > 0 {
		seen := make(map[string]bool, len(n.keys))
		for _, k := range n.keys {
			seen[k] = true
		}
		for _, m := range merged {
			for i, k := range m.keys {
				if !seen[k] {
					seen[k] = true
					n.keys = append(n.keys, k)
					n.vals = append(n.vals, m.vals[i])
				}
			}
		}
	}
	return n, nil
}

// yaml11Bools are the plain words yaml.v2 (and so confd) read as booleans, which YAML 1.2
// and yaml.v3 read as strings. Rendering them as confd did keeps `ssl: on` meaning "true"
// for templates written against confd.
var yaml11Bools = map[string]string{
	"y": "true", "Y": "true", "yes": "true", "Yes": "true", "YES": "true",
	"on": "true", "On": "true", "ON": "true",
	"n": "false", "N": "false", "no": "false", "No": "false", "NO": "false",
	"off": "false", "Off": "false", "OFF": "false",
}

// renderYAMLScalar renders a scalar the way confd's file backend does: integers in
// decimal, floats in their shortest form without exponent (80.0 is "80"), booleans as
// true/false; null is "" here (confd dropped the key). Anything else (strings,
// timestamps, custom tags) is its text as written.
func renderYAMLScalar(y *yaml.Node) (string, string) {
	switch y.ShortTag() {
	case "!!null":
		return "", "null"
	case "!!bool":
		var b bool
		if y.Decode(&b) == nil {
			return strconv.FormatBool(b), "bool"
		}
	case "!!int":
		var v any
		if y.Decode(&v) == nil {
			switch v := v.(type) {
			case int:
				return strconv.Itoa(v), "int"
			case int64:
				return strconv.FormatInt(v, 10), "int"
			case uint64:
				return strconv.FormatUint(v, 10), "int"
			case float64:
				// An integer wider than 64 bits, which yaml.v3 rounds to a float:
				// kept exactly instead (in decimal).
				if i, ok := new(big.Int).SetString(y.Value, 0); ok {
					return i.String(), "int"
				}
				return formatFloat(v), "float"
			}
		}
	case "!!float":
		// yaml.v3 resolves an integer wider than 64 bits as a float, rounding it:
		// kept exactly instead (in decimal).
		if i, ok := new(big.Int).SetString(y.Value, 0); ok {
			return i.String(), "int"
		}
		var f float64
		if y.Decode(&f) == nil {
			return formatFloat(f), "float"
		}
	case "!!str":
		if y.Style == 0 {
			if b, ok := yaml11Bools[y.Value]; ok {
				return b, "bool"
			}
		}
	}
	return y.Value, "str"
}

func formatFloat(f float64) string {
	if f == 0 {
		f = math.Abs(f) // no "-0"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// renderJSONNumber renders a JSON number like a YAML one: integers exactly, other
// numbers in their shortest form ("1.50" is "1.5", "1e3" is "1000").
func renderJSONNumber(s string) (string, string, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(i, 10), "int", nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return strconv.FormatUint(u, 10), "int", nil
	}
	if !strings.ContainsAny(s, ".eE") {
		// An integer wider than 64 bits: exactly, not rounded through a float.
		if i, ok := new(big.Int).SetString(s, 10); ok {
			return i.String(), "int", nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "", "", fmt.Errorf("number %s: %w", s, err)
	}
	return formatFloat(f), "float", nil
}

// parseJSON reads one JSON document with encoding/json's tokenizer, which reports
// offsets, so that every value gets a line and a duplicate key can be reported instead
// of silently taking the last one.
func parseJSON(data []byte) (*node, error) {
	lines := lineStarts(data)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	p := &jsonParser{dec: dec, lines: lines, budget: maxNodes}
	n, err := p.value(0)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errAt(p.line(), "unexpected data after the top-level value")
		}
	}
	if err != nil {
		var le *lineError
		if errors.As(err, &le) {
			return nil, err
		}
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Offset counts the bytes before the offending one.
			return nil, &lineError{lineOf(lines, min(syn.Offset, int64(len(data))-1)), err}
		}
		// io.ErrUnexpectedEOF and the like: the document stops short.
		return nil, &lineError{lineOf(lines, int64(len(data))-1), fmt.Errorf("unexpected end of JSON: %w", err)}
	}
	return n, nil
}

type jsonParser struct {
	dec    *json.Decoder
	lines  []int64
	budget int
}

// line is the line of the token just read: InputOffset is just past its end, and no
// JSON token spans lines.
func (p *jsonParser) line() int { return lineOf(p.lines, max(p.dec.InputOffset()-1, 0)) }

func (p *jsonParser) value(depth int) (*node, error) {
	tok, err := p.dec.Token()
	if err != nil {
		return nil, err
	}
	return p.fromToken(tok, depth)
}

func (p *jsonParser) fromToken(tok json.Token, depth int) (*node, error) {
	line := p.line()
	if depth > maxDepth {
		return nil, errAt(line, "nested deeper than %d levels", maxDepth)
	}
	if p.budget--; p.budget < 0 {
		return nil, errAt(line, "more than %d values, lists and maps", maxNodes)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &node{kind: mapNode, line: line}
			for p.dec.More() {
				kt, err := p.dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errAt(p.line(), "object key is not a string")
				}
				v, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k)
				n.vals = append(n.vals, v)
			}
			_, err := p.dec.Token() // '}'
			return n, err
		case '[':
			n := &node{kind: listNode, line: line}
			for p.dec.More() {
				v, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.vals = append(n.vals, v)
			}
			_, err := p.dec.Token() // ']'
			return n, err
		}
		return nil, errAt(line, "unexpected %q", t)
	case string:
		return &node{kind: scalarNode, line: line, value: t, tag: "str"}, nil
	case json.Number:
		v, tag, err := renderJSONNumber(string(t))
		if err != nil {
			return nil, errAt(line, "%w", err)
		}
		return &node{kind: scalarNode, line: line, value: v, tag: tag}, nil
	case bool:
		return &node{kind: scalarNode, line: line, value: strconv.FormatBool(t), tag: "bool"}, nil
	case nil:
		return &node{kind: scalarNode, line: line, tag: "null"}, nil
	}
	return nil, errAt(line, "unexpected JSON token %v", tok)
}

// lineStarts returns the offset at which each line begins.
func lineStarts(data []byte) []int64 {
	starts := []int64{0}
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, int64(i+1))
		}
	}
	return starts
}

// lineOf returns the 1-based line holding the byte at index i.
func lineOf(starts []int64, i int64) int {
	return sort.Search(len(starts), func(n int) bool { return starts[n] > i })
}
