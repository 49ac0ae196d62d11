package backends

import (
	"reflect"
	"testing"
)

// A slow receiver gets one event that is a state that existed, and the events added
// are never changed (ZooKeeper offers one change to every watch of a tree).
func TestPendingMergesIntoARealState(t *testing.T) {
	tgt := PrefixTarget("/app")
	var p Pending
	first := map[string]string{"/app/a": "1", "/app/b": "1"}
	p.Add(Event{Target: tgt, Revision: 3, KVs: first})
	p.Add(Event{Target: tgt, Revision: 4, Deleted: []string{"/app/a"}})
	p.Add(Event{Target: tgt, Revision: 5, KVs: map[string]string{"/app/c": "1"}, Deleted: []string{"/app/b"}})
	p.Add(Event{Target: tgt, Revision: 6, KVs: map[string]string{"/app/b": "2"}})
	want := Event{Target: tgt, Revision: 6,
		KVs: map[string]string{"/app/b": "2", "/app/c": "1"}, Deleted: []string{"/app/a"}}
	if got := p.Event(); !reflect.DeepEqual(got, want) {
		t.Errorf("merged\n got %+v\nwant %+v", got, want)
	}
	if len(first) != 2 {
		t.Errorf("an added event's map was changed: %v", first)
	}
	if ev, ok := p.Take(); !ok || ev.Revision != 6 {
		t.Fatalf("Take = %+v, %v", ev, ok)
	}
	if _, ok := p.Take(); ok || p.Has() {
		t.Fatal("an event waits after Take")
	}

	// A Full event replaces what waits; later changes fold into it without Deleted.
	p.Add(Event{Target: tgt, Revision: 7, KVs: map[string]string{"/app/x": "1"}})
	p.Add(Event{Target: tgt, Revision: 9, Full: true, KVs: map[string]string{"/app/y": "1", "/app/z": "1"}})
	p.Add(Event{Target: tgt, Revision: 10, Deleted: []string{"/app/y"}, KVs: map[string]string{"/app/w": "1"}})
	want = Event{Target: tgt, Revision: 10, Full: true, KVs: map[string]string{"/app/z": "1", "/app/w": "1"}}
	if got := p.Event(); !reflect.DeepEqual(got, want) {
		t.Errorf("merged into Full\n got %+v\nwant %+v", got, want)
	}
}

// For lists the later event wins, and stays Full once a Full one was added.
func TestPendingListKeepsFull(t *testing.T) {
	tgt := ServiceTarget(ServiceQuery{Name: "web"})
	var p Pending
	p.Add(Event{Target: tgt, Revision: 1, Full: true, Services: []Service{{ID: "a"}}})
	p.Add(Event{Target: tgt, Revision: 2})
	ev, ok := p.Take()
	if !ok || !ev.Full || ev.Revision != 2 || ev.Services != nil {
		t.Errorf("got %+v, want the later event, Full", ev)
	}
	p.Add(Event{Target: tgt, Revision: 3})
	if ev, _ := p.Take(); ev.Full {
		t.Errorf("got %+v, want not Full", ev)
	}
}
