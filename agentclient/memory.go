package agentclient

// memoryLimit is how many command ids an Agent remembers to drop redeliveries.
const memoryLimit = 10000

// memory remembers the last memoryLimit command ids and, once known, the complete or failed
// frame of each, so a redelivered command is acknowledged again and answered with its result
// instead of running twice. Its methods are called with Agent.memMu held.
type memory struct {
	entries map[string]*memEntry
	ring    []string // insertion order, a circular buffer of memoryLimit ids
	next    int
	limit   int
}

type memEntry struct {
	result []byte // the complete/failed frame; nil while the command runs
}

func newMemory(limit int) *memory {
	return &memory{entries: make(map[string]*memEntry), ring: make([]string, limit), limit: limit}
}

// add records id as running. It reports false, with the entry, when id is already known.
func (m *memory) add(id string) (*memEntry, bool) {
	if e, ok := m.entries[id]; ok {
		return e, false
	}
	if old := m.ring[m.next]; old != "" {
		delete(m.entries, old)
	}
	m.ring[m.next] = id
	m.next = (m.next + 1) % m.limit
	e := &memEntry{}
	m.entries[id] = e
	return e, true
}

// finish stores the result frame of id, if id is still remembered.
func (m *memory) finish(id string, frame []byte) {
	if e, ok := m.entries[id]; ok {
		e.result = frame
	}
}
