package websocket

import "slices"

// subscriberSet is the set of clients subscribed to one user or session. Most have one or a
// few members (a user's tabs, a session's viewers), which a short list holds in a few bytes;
// past smallSet members it becomes a map, so membership stays cheap for a crowd.
type subscriberSet struct {
	list []*Client
	set  clientSet
}

const smallSet = 8

func (s *subscriberSet) add(c *Client) {
	switch {
	case s.set != nil:
		s.set[c] = struct{}{}
	case slices.Contains(s.list, c):
	case len(s.list) < smallSet:
		s.list = append(s.list, c)
	default:
		s.set = make(clientSet, 2*smallSet)
		for _, m := range s.list {
			s.set[m] = struct{}{}
		}
		s.set[c] = struct{}{}
		s.list = nil
	}
}

func (s *subscriberSet) remove(c *Client) {
	if s.set != nil {
		delete(s.set, c)
		return
	}
	if i := slices.Index(s.list, c); i >= 0 {
		s.list = slices.Delete(s.list, i, i+1)
	}
}

func (s *subscriberSet) len() int {
	if s == nil {
		return 0
	}
	return len(s.list) + len(s.set)
}

func (s *subscriberSet) contains(c *Client) bool {
	if s == nil {
		return false
	}
	if s.set != nil {
		_, ok := s.set[c]
		return ok
	}
	return slices.Contains(s.list, c)
}

// appendTo appends the members to out.
func (s *subscriberSet) appendTo(out []*Client, skip func(*Client) bool) []*Client {
	if s == nil {
		return out
	}
	for _, c := range s.list {
		if !skip(c) {
			out = append(out, c)
		}
	}
	for c := range s.set {
		if !skip(c) {
			out = append(out, c)
		}
	}
	return out
}
