package template

import (
	"net"
	"reflect"
	"slices"
	"testing"

	"github.com/heraldhq/herald/backends"
)

// Renders share the lists ls and lsdir return unless their template calls a function of
// inPlaceFuncs. This calls every installed function with a list in each argument
// position and fails when one changes the list without being in inPlaceFuncs.
func TestInPlaceFuncsIsComplete(t *testing.T) {
	fm := (&Template{resolver: net.DefaultResolver}).funcMap(&execState{src: MapSource{}})
	lists := []func() any{
		func() any { return []string{"bb", "a", "ccc", "a"} },
		func() any {
			return []backends.KVPair{{Key: "/bb", Value: "2"}, {Key: "/a", Value: "1"}, {Key: "/ccc", Value: "3"}}
		},
	}
	changers := map[string]bool{}
	for name, fn := range fm {
		ft := reflect.TypeOf(fn)
		for pos := range ft.NumIn() {
			for _, mk := range lists {
				list := mk()
				pt := ft.In(pos)
				if ft.IsVariadic() && pos == ft.NumIn()-1 {
					pt = pt.Elem()
				}
				if !reflect.TypeOf(list).AssignableTo(pt) {
					continue
				}
				args := make([]reflect.Value, ft.NumIn())
				for i := range args {
					it := ft.In(i)
					if ft.IsVariadic() && i == ft.NumIn()-1 {
						it = it.Elem()
					}
					args[i] = reflect.Zero(it)
				}
				args[pos] = reflect.ValueOf(list) // a variadic one as its only element
				func() {
					defer func() { recover() }()
					reflect.ValueOf(fn).Call(args)
				}()
				if !reflect.DeepEqual(list, mk()) {
					changers[name] = true
				}
			}
		}
	}
	for name := range changers {
		if !slices.Contains(inPlaceFuncs, name) {
			t.Errorf("%s changes the list it is given but is not in inPlaceFuncs", name)
		}
	}
	for _, name := range inPlaceFuncs {
		if !changers[name] {
			t.Errorf("%s is in inPlaceFuncs but changed no list here", name)
		}
	}
}
