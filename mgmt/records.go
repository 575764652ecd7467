package mgmt

import "slices"

// record is implemented (on the pointer) by every object with an id.
type record[T any] interface {
	*T
	objectID() int
	setObjectID(int)
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

// NextID returns the id a new object of list gets: one more than the
// largest id in it. Front-ends that edit a whole Config (for changes that
// must land together) number their new objects with it.
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
