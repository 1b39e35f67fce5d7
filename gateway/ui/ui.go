// Package ui holds the gateway's status page: one self-contained HTML file
// (no external assets) that polls /api/status.
package ui

import _ "embed"

// Index is the status page.
//
//go:embed index.html
var Index []byte
