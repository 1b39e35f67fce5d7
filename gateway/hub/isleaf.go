package hub

// IsLeaf reports whether id is a configured client of the hub (an MQTT leaf
// device or an observer), so a C2D command for it can go through Deliver.
func (h *Hub) IsLeaf(id string) bool {
	_, ok := h.clients[id]
	return ok
}
