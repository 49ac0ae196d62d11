package consul

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
)

// consulKey spells a clean herald key the way Consul stores it: "/a/b" is "a/b", and "/"
// (everything) is "".
func consulKey(k string) string { return strings.TrimPrefix(k, "/") }

// escapeKey escapes each segment of a Consul key for a URL path, keeping the slashes.
func escapeKey(k string) string {
	parts := strings.Split(k, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// addPairs folds Consul KV pairs into kvs, keeping only keys under one of prefixes (Consul
// matches prefixes by string, so "app" also returns "apple"). A folder placeholder
// ("a/b/", made by the UI) reads as key "/a/b" with its (usually empty) value, as confd
// shows it, unless a real "a/b" exists: then the real value wins. It returns the highest
// ModifyIndex seen.
func addPairs(kvs map[string]string, folders map[string]bool, pairs []kvPair, prefixes []string) uint64 {
	var top uint64
	for _, p := range pairs {
		k := backends.CleanKey(p.Key)
		if !underAny(k, prefixes) {
			continue
		}
		top = max(top, p.ModifyIndex)
		folder := strings.HasSuffix(p.Key, "/")
		if _, exists := kvs[k]; exists && folder && !folders[k] {
			continue
		}
		kvs[k] = string(p.Value)
		// Only folders are noted: a prefix without any stays without a second map.
		if folder {
			folders[k] = true
		} else {
			delete(folders, k)
		}
	}
	return top
}

func underAny(k string, prefixes []string) bool {
	for _, p := range prefixes {
		if backends.UnderPrefix(k, p) {
			return true
		}
	}
	return false
}

// kvPair is what herald reads of a Consul KV entry. A KV list answers the whole prefix
// at every change; decoding into api.KVPair would allocate each entry and its Session,
// Namespace and Partition too.
type kvPair struct {
	Key         string
	Value       []byte
	ModifyIndex uint64
}

// txnAnswer is a read-only transaction's answer. Consul puts the ACL filtering flag in the
// body here (there is no X-Consul-Results-Filtered-By-ACLs header on /v1/txn), so the
// api package's TxnResponse, which drops it, will not do.
type txnAnswer struct {
	Results []struct {
		KV *kvPair
	}
	Errors                api.TxnErrors
	ResultsFilteredByACLs bool
}

// Get reads every key under prefixes. Up to 64 prefixes are read in one transaction, so
// they are consistent with each other; a longer list is read one batch of 64 after the
// other (Consul caps the operations of a transaction), each batch consistent in itself.
// "/" (everything) is one recursive read.
//
// A read-only transaction reports no index, so the revision is the highest ModifyIndex a
// batch read: a lower bound of the index at that read. With several batches it is the
// lowest of those, a lower bound for every batch, so that a watch started from it misses
// no change made after any of the reads (it may wake for one made in between, which it
// recognizes as no change).
//
// Consul hides keys a token may not read instead of refusing; a read with keys hidden
// under one of the prefixes fails with ErrPermission rather than return part of the data.
func (s *Store) Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error) {
	ps := backends.MinimalPrefixes(prefixes)
	kvs := make(map[string]string)
	folders := make(map[string]bool)
	var rev uint64
	if len(ps) == 1 && ps[0] == "/" {
		// A transaction's get-tree needs a non-empty key; a recursive list of "" is one
		// consistent read of the whole store.
		var idx uint64
		err := s.once(ctx, func(ctx context.Context) error {
			clear(kvs)
			clear(folders)
			var err error
			idx, err = s.listTree(ctx, "/", 0, kvs, folders)
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		s.remember(backends.PrefixTarget("/"), idx, prefixEvent("/", idx, kvs))
		return kvs, idx, nil
	}
	for start := 0; start < len(ps); start += maxTxnOps {
		batch := ps[start:min(start+maxTxnOps, len(ps))]
		var top uint64
		err := s.once(ctx, func(ctx context.Context) error {
			var err error
			top, err = s.readBatch(ctx, batch, kvs, folders)
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		if start == 0 {
			rev = top
		} else {
			rev = min(rev, top)
		}
	}
	// Minimal prefixes do not overlap: each key lies under exactly one, found among its
	// ancestors.
	subs := make(map[string]map[string]string, len(ps))
	for _, p := range ps {
		subs[p] = make(map[string]string)
	}
	for k, v := range kvs {
		for a := k; ; a = path.Dir(a) {
			if sub, ok := subs[a]; ok {
				sub[k] = v
				break
			}
			if a == "/" {
				break
			}
		}
	}
	for p, sub := range subs {
		s.remember(backends.PrefixTarget(p), rev, prefixEvent(p, rev, sub))
	}
	return kvs, rev, nil
}

// readBatch reads up to maxTxnOps prefixes in one transaction.
func (s *Store) readBatch(ctx context.Context, batch []string, kvs map[string]string, folders map[string]bool) (uint64, error) {
	ops := make(api.TxnOps, 0, len(batch))
	for _, p := range batch {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: consulKey(p)}})
	}
	var ans txnAnswer
	r := request{method: http.MethodPut, path: "/v1/txn", body: ops, out: &ans}
	m, err := s.do(ctx, r, s.attempt)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", strings.Join(batch, ", "), err)
	}
	if len(ans.Errors) > 0 {
		e := ans.Errors[0]
		return 0, fmt.Errorf("consul: get %s: transaction failed at %s: %s", strings.Join(batch, ", "), batch[min(e.OpIndex, len(batch)-1)], e.What)
	}
	if ans.ResultsFilteredByACLs {
		if err := s.checkHidden(ctx, batch); err != nil {
			return 0, err
		}
	}
	if err := s.anonymousDenied(ctx, m, r, "key prefix", keyChecks(batch)); err != nil {
		return 0, err
	}
	pairs := make([]kvPair, 0, len(ans.Results))
	for _, r := range ans.Results {
		if r.KV != nil {
			pairs = append(pairs, *r.KV)
		}
	}
	return addPairs(kvs, folders, pairs, batch), nil
}

// checkHidden decides whether keys Consul hid lie under the prefixes on path boundaries
// ("app/..."), or are merely neighbours that match by string ("apple"), by reading the
// subtrees again with a trailing slash.
func (s *Store) checkHidden(ctx context.Context, batch []string) error {
	ops := make(api.TxnOps, 0, len(batch))
	for _, p := range batch {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: consulKey(p) + "/"}})
	}
	var ans txnAnswer
	r := request{method: http.MethodPut, path: "/v1/txn", body: ops, out: &ans}
	m, err := s.do(ctx, r, s.attempt)
	if err != nil {
		return fmt.Errorf("get %s: %w", strings.Join(batch, ", "), err)
	}
	if ans.ResultsFilteredByACLs {
		return hidden(m, r, "the token may not read some keys under "+strings.Join(batch, ", ")+" and Consul left them out")
	}
	return nil
}

// listTree reads prefix p (clean) recursively with a KV list, blocking from index when it
// is not 0, into kvs, and returns Consul's index for it.
func (s *Store) listTree(ctx context.Context, p string, index uint64, kvs map[string]string, folders map[string]bool) (uint64, error) {
	var pairs []kvPair
	q := s.blocking(url.Values{"recurse": {""}}, index)
	// 404 is an empty tree, with an index to block on.
	r := request{method: http.MethodGet, path: "/v1/kv/" + escapeKey(consulKey(p)), query: q, out: &pairs, ok: []int{http.StatusNotFound}}
	m, err := s.do(ctx, r, s.blockTimeout(index))
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", p, err)
	}
	if m.filtered {
		if p == "/" {
			return 0, hidden(m, r, "the token may not read some keys and Consul left them out")
		}
		if err := s.checkHidden(ctx, []string{p}); err != nil {
			return 0, err
		}
	}
	if err := s.anonymousDenied(ctx, m, r, "key prefix", keyChecks([]string{p})); err != nil {
		return 0, err
	}
	addPairs(kvs, folders, pairs, []string{p})
	return m.index, nil
}

// keyChecks asks, for each prefix, whether its key or its subtree may be read.
func keyChecks(prefixes []string) [][]authzCheck {
	out := make([][]authzCheck, 0, len(prefixes))
	for _, p := range prefixes {
		k := consulKey(p)
		if k == "" {
			out = append(out, []authzCheck{{Resource: "key", Access: "read", Segment: ""}})
			continue
		}
		out = append(out, []authzCheck{{Resource: "key", Access: "read", Segment: k + "/"}, {Resource: "key", Access: "read", Segment: k}})
	}
	return out
}

func prefixEvent(p string, rev uint64, kvs map[string]string) backends.Event {
	return backends.Event{Target: backends.PrefixTarget(p), Revision: rev, Full: true, KVs: kvs}
}
