package mgmt

import "slices"

// record is implemented (on the pointer) by every object with an id.
type record[T any] interface {
	*T
	objectID() int
	setObjectID(int)
	// counter is the id counter of the object's kind.
	counter(*IDCounters) *int
}

func (p *Portal) objectID() int            { return p.ID }
func (p *Portal) setObjectID(id int)       { p.ID = id }
func (i *Initiator) objectID() int         { return i.ID }
func (i *Initiator) setObjectID(id int)    { i.ID = id }
func (a *Auth) objectID() int              { return a.ID }
func (a *Auth) setObjectID(id int)         { a.ID = id }
func (t *Target) objectID() int            { return t.ID }
func (t *Target) setObjectID(id int)       { t.ID = id }
func (e *Extent) objectID() int            { return e.ID }
func (e *Extent) setObjectID(id int)       { e.ID = id }
func (m *TargetExtent) objectID() int      { return m.ID }
func (m *TargetExtent) setObjectID(id int) { m.ID = id }

func (p *Pool) objectID() int      { return p.ID }
func (p *Pool) setObjectID(id int) { p.ID = id }

func (*Portal) counter(n *IDCounters) *int       { return &n.Portal }
func (*Initiator) counter(n *IDCounters) *int    { return &n.Initiator }
func (*Auth) counter(n *IDCounters) *int         { return &n.Auth }
func (*Target) counter(n *IDCounters) *int       { return &n.Target }
func (*Extent) counter(n *IDCounters) *int       { return &n.Extent }
func (*TargetExtent) counter(n *IDCounters) *int { return &n.TargetExtent }
func (*Pool) counter(n *IDCounters) *int         { return &n.Pool }

// find returns the object with id.
func find[T any, P record[T]](list []T, id int) (T, bool) {
	for i := range list {
		if P(&list[i]).objectID() == id {
			return list[i], true
		}
	}
	var zero T
	return zero, false
}

// index returns the position of the object with id, or -1.
func index[T any, P record[T]](list []T, id int) int {
	return slices.IndexFunc(list, func(v T) bool { return P(&v).objectID() == id })
}

// idsOf lists the ids of list.
func idsOf[T any, P record[T]](list []T) []int {
	out := make([]int, len(list))
	for i := range list {
		out[i] = P(&list[i]).objectID()
	}
	return out
}

// NewID takes the id of a new object of list's kind in c (list is that
// kind's list in c): the kind's counter in c.NextIDs, raised above the
// ids in list if need be, which then moves on. Ids are never reused.
// Front-ends that edit a whole Config (Manager.Update, for changes that
// must land together) number their new objects with it.
func NewID[T any, P record[T]](c *Config, list []T) int {
	n := P(new(T)).counter(&c.NextIDs)
	*n = max(*n, NextID[T, P](list))
	id := *n
	*n++
	return id
}

// NextID returns one more than the largest id in list: the least a
// kind's counter can be. Use NewID to number a new object: this would
// give a deleted object's id again.
func NextID[T any, P record[T]](list []T) int {
	n := 0
	for _, id := range idsOf[T, P](list) {
		n = max(n, id)
	}
	return n + 1
}

// FreeAuthTag returns the smallest auth group tag that no credential,
// portal or target group uses yet.
func (c *Config) FreeAuthTag() int {
	used := map[int]bool{}
	for _, a := range c.Auths {
		used[a.Tag] = true
	}
	for _, p := range c.Portals {
		if p.DiscoveryAuthGroup != nil {
			used[*p.DiscoveryAuthGroup] = true
		}
	}
	for _, t := range c.Targets {
		for _, g := range t.Groups {
			if g.Auth != nil {
				used[*g.Auth] = true
			}
		}
	}
	n := 1
	for used[n] {
		n++
	}
	return n
}
