// A position-independent program that releases its executable's pages and then uses
// what relocation wrote into its read-only data (interface tables, type descriptors,
// function values): a released relocated page would come back unrelocated and crash it.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/heraldhq/herald/cmd/herald/internal/pagetrim"
)

type shape interface{ area() float64 }
type square struct{ S float64 }
type circle struct{ R float64 }

func (s square) area() float64 { return s.S * s.S }
func (c circle) area() float64 { return 3 * c.R * c.R }

func main() {
	st, err := pagetrim.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shapes := []shape{square{2}, circle{1}, square{1}}
	sort.Slice(shapes, func(i, j int) bool { return shapes[i].area() < shapes[j].area() })
	b, err := json.Marshal(shapes)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s %s %s kept=%d released=%d\n", b, reflect.TypeOf(shapes[1]).Name(), strings.ToUpper("ok"), st.Kept, st.Released)
}
