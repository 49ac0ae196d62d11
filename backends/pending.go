package backends

import (
	"maps"
	"slices"
)

// Pending is the event of one target that waits for a slow receiver. Later events merge
// into it instead of queueing, so the receiver sees fewer, larger steps, each one a
// state that existed, and a watch never blocks on it. The zero value is empty.
//
// Merging, by the target's Kind:
//   - a prefix: a Full event replaces what waits; an incremental event is applied on top
//     (upserts overwrite, deletions remove; a deletion is recorded in Deleted only while
//     the waiting event is incremental, since a Full one already is the whole state);
//   - a service list or the service names: the later event replaces what waits, and the
//     result is Full if either was (a backend that recomputes lists when it sends uses
//     Full to say "the whole state was offered, send even if the list looks unchanged").
//
// The event's Revision is always the latest one added. Pending is not safe for
// concurrent use; its owner locks.
type Pending struct {
	ev    Event
	has   bool
	del   map[string]struct{} // ev.Deleted as a set, for merging
	owned bool                // ev.KVs was allocated here and may be changed in place
}

// Add merges ev into what waits. Add never changes ev's maps: the first incremental
// event merged on top of another copies the waiting KVs, so one event may be added to
// several Pendings.
func (p *Pending) Add(ev Event) {
	if !p.has || ev.Full || ev.Target.Kind() != KindPrefix {
		full := ev.Full || (p.has && p.ev.Full && ev.Target.Kind() != KindPrefix)
		p.ev, p.has, p.owned = ev, true, false
		p.ev.Full = full
		p.del = make(map[string]struct{}, len(ev.Deleted))
		for _, k := range ev.Deleted {
			p.del[k] = struct{}{}
		}
		p.ev.Deleted = sortedSet(p.del)
		return
	}
	// Incremental prefix event on top of a waiting one (Full or not).
	if !p.owned {
		p.ev.KVs = maps.Clone(p.ev.KVs)
		if p.ev.KVs == nil {
			p.ev.KVs = make(map[string]string, len(ev.KVs))
		}
		p.owned = true
	}
	for k, v := range ev.KVs {
		p.ev.KVs[k] = v
		delete(p.del, k)
	}
	for _, k := range ev.Deleted {
		delete(p.ev.KVs, k)
		if !p.ev.Full {
			p.del[k] = struct{}{}
		}
	}
	p.ev.Deleted = sortedSet(p.del)
	p.ev.Revision = ev.Revision
}

// Has reports whether an event waits.
func (p *Pending) Has() bool { return p.has }

// Event returns the waiting event (Deleted sorted) without removing it; the zero Event
// when none waits. It is cheap: callers may offer it in every round of a select.
func (p *Pending) Event() Event { return p.ev }

// Take returns the waiting event and empties p; false when none waits.
func (p *Pending) Take() (Event, bool) {
	ev, ok := p.ev, p.has
	p.Clear()
	return ev, ok
}

// Clear drops the waiting event.
func (p *Pending) Clear() { *p = Pending{} }

func sortedSet(m map[string]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}
