package iothub

// Pending holds reported patches that are not yet acknowledged upstream
// (made while the cloud was unreachable, or while one was in flight), merged
// into as few patches as keep their meaning: sending Patches in order has
// the same effect on any upstream copy of the section as sending every
// patch that was added, in the order added. Nearly always that is one patch
// (later values win, null deletes); only a patch that puts an object where
// an earlier pending patch put a value or null needs a patch of its own,
// since a merge patch cannot say "replace with this object".
//
// The zero Pending is empty. It is not safe for concurrent use.
type Pending struct {
	patches []Patch
}

// Add queues p after the patches already pending. p is not kept: later
// changes to it do not reach the pending patches.
func (q *Pending) Add(p Patch) {
	if n := len(q.patches); n > 0 {
		if merged, ok := compose(q.patches[n-1], p); ok {
			q.patches[n-1] = merged
			return
		}
	}
	q.patches = append(q.patches, clonePatch(p))
}

// Patches returns the pending patches, oldest first; nil when none. The
// slice and maps are the caller's to read, not to change.
func (q *Pending) Patches() []Patch { return q.patches }

// Len is the number of pending patches.
func (q *Pending) Len() int { return len(q.patches) }

// Done drops the first n patches, once upstream has acknowledged them.
func (q *Pending) Done(n int) {
	n = min(n, len(q.patches))
	q.patches = append(q.patches[:0:0], q.patches[n:]...)
}

// compose returns one patch with the effect of a then b on any target, and
// false when there is none.
func compose(a, b Patch) (Patch, bool) {
	out := clonePatch(a)
	for k, bv := range b {
		bm, isObj := bv.(map[string]any)
		if !isObj {
			out[k] = cloneValue(bv) // replaces (or deletes) whatever a did
			continue
		}
		av, inA := out[k]
		if !inA {
			out[k] = cloneValue(bm)
			continue
		}
		am, ok := av.(map[string]any)
		if !ok {
			return nil, false // a set a value or null, b merges an object into it
		}
		sub, ok := compose(am, bm)
		if !ok {
			return nil, false
		}
		out[k] = map[string]any(sub)
	}
	return out, true
}

func clonePatch(p Patch) Patch {
	out := make(Patch, len(p))
	for k, v := range p {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return map[string]any(clonePatch(v))
	case Patch:
		return map[string]any(clonePatch(v))
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}
