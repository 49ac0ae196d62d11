package template

import (
	"text/template"
	tparse "text/template/parse"
)

// usedFuncs returns the function names a parsed template (with its {{define}}s) calls.
// text/template copies the whole function map into every template, and with sprig that
// is ~40 KB each: 1,000 resources would hold 40 MB of identical maps. Re-parsing with
// only the functions a template names keeps each to a few hundred bytes.
func usedFuncs(t *template.Template) map[string]bool {
	used := map[string]bool{}
	var walk func(n tparse.Node)
	walk = func(n tparse.Node) {
		switch n := n.(type) {
		case nil:
		case *tparse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c)
				}
			}
		case *tparse.ActionNode:
			walk(n.Pipe)
		case *tparse.PipeNode:
			if n != nil {
				for _, c := range n.Cmds {
					walk(c)
				}
			}
		case *tparse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *tparse.IdentifierNode:
			used[n.Ident] = true
		case *tparse.ChainNode:
			walk(n.Node)
		case *tparse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *tparse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *tparse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *tparse.TemplateNode:
			walk(n.Pipe)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return used
}

// trimFuncs keeps the entries of full that used names.
func trimFuncs(full template.FuncMap, used map[string]bool) template.FuncMap {
	out := make(template.FuncMap, len(used))
	for name := range used {
		if f, ok := full[name]; ok {
			out[name] = f
		}
	}
	return out
}
