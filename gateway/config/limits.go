package config

import (
	"fmt"
	"io"
	"os"

	"github.com/goccy/go-yaml/ast"
)

// Limits on a config file, checked before and right after parsing so that
// a hostile or broken file (at start or on a SIGHUP reload) costs little:
// goccy/go-yaml's parser takes memory that grows steeply with nesting
// (a 40 KB file of nested brackets took 661 MB), and aliases and merge
// keys expand a small file without bound.
const (
	// MaxFileBytes is the largest config file read.
	MaxFileBytes = 1 << 20
	// MaxDepth is the deepest nesting of block and flow collections
	// allowed; a real config nests about six deep.
	MaxDepth = 64
	// MaxExpandedNodes bounds the nodes of the document with every alias
	// and merge key expanded (more than any file of MaxFileBytes has
	// without them).
	MaxExpandedNodes = 1 << 20
)

// readLimited reads the file at path, refusing one larger than
// MaxFileBytes without reading more.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("file larger than %d bytes", MaxFileBytes)}}
	}
	return data, nil
}

// checkLimits refuses data larger than MaxFileBytes or nested deeper than
// MaxDepth, by a scan of indentation, "- " items and flow brackets that
// costs one pass and no allocation per line. It overestimates nothing a
// parser would nest less deeply, and may underestimate (a block scalar's
// indentation counts as nesting), which only matters near the limit.
func checkLimits(file string, data []byte) error {
	if len(data) > MaxFileBytes {
		return Errors{{File: file, Line: 1, Col: 1, Msg: fmt.Sprintf("file larger than %d bytes", MaxFileBytes)}}
	}
	var stack [MaxDepth + 1]int // indentation columns of the open block levels
	depth := 0                  // block levels open
	flow := 0                   // flow brackets open
	line := 0
	for start := 0; start < len(data); {
		end := start
		for end < len(data) && data[end] != '\n' {
			end++
		}
		line++
		l := data[start:end]
		start = end + 1
		col := 0
		for col < len(l) && l[col] == ' ' {
			col++
		}
		if col == len(l) || l[col] == '#' || l[col] == '\r' {
			continue
		}
		if flow == 0 {
			for depth > 0 && stack[depth-1] >= col {
				depth--
			}
			for {
				if depth > MaxDepth-1 {
					return tooDeep(file, line, col)
				}
				stack[depth] = col
				depth++
				// "- " opens one more level at the item's content.
				if col+1 < len(l) && l[col] == '-' && l[col+1] == ' ' {
					col += 2
					for col < len(l) && l[col] == ' ' {
						col++
					}
					continue
				}
				break
			}
		}
		var quote byte
		for i := col; i < len(l); i++ {
			c := l[i]
			switch {
			case quote != 0:
				if c == quote {
					quote = 0
				} else if c == '\\' && quote == '"' {
					i++
				}
			case c == '"' || c == '\'':
				if i == col || l[i-1] == ' ' || l[i-1] == '[' || l[i-1] == '{' || l[i-1] == ',' || l[i-1] == ':' {
					quote = c
				}
			case c == '#' && (i == 0 || l[i-1] == ' '):
				i = len(l)
			case c == '[' || c == '{':
				flow++
				if depth+flow > MaxDepth {
					return tooDeep(file, line, i)
				}
			case (c == ']' || c == '}') && flow > 0:
				flow--
			}
		}
	}
	return nil
}

func tooDeep(file string, line, col int) error {
	return Errors{{File: file, Line: line, Col: col + 1, Msg: fmt.Sprintf("nested deeper than %d levels", MaxDepth)}}
}

// checkExpansion refuses a document whose aliases and merge keys expand
// it to more than MaxExpandedNodes nodes. Each anchor's expanded size is
// computed once, so the check costs one pass over the document as written.
func (d *decoder) checkExpansion(root ast.Node) bool {
	sizes := map[ast.Node]int{}
	const busy = -1
	var size func(n ast.Node, depth int) int
	size = func(n ast.Node, depth int) int {
		if n == nil || depth > 2*MaxDepth {
			return 0
		}
		if s, ok := sizes[n]; ok {
			if s == busy {
				return 1 // an alias inside its own anchor
			}
			return s
		}
		sizes[n] = busy
		s := 1
		add := func(k int) { s = min(s+k, MaxExpandedNodes+1) }
		switch n := n.(type) {
		case *ast.AnchorNode:
			s = size(n.Value, depth+1)
		case *ast.TagNode:
			s = size(n.Value, depth+1)
		case *ast.AliasNode:
			if t, ok := d.anchors[scalarString(n.Value)]; ok {
				s = size(t, depth+1)
			}
		case *ast.MappingNode:
			for _, mv := range n.Values {
				add(1 + size(mv.Value, depth+1))
			}
		case *ast.MappingValueNode:
			add(1 + size(n.Value, depth+1))
		case *ast.SequenceNode:
			for _, v := range n.Values {
				add(size(v, depth+1))
			}
		}
		sizes[n] = s
		return s
	}
	if size(root, 0) > MaxExpandedNodes {
		d.errorf(posOf(root), "", "aliases and merge keys expand to more than %d nodes", MaxExpandedNodes)
		return false
	}
	return true
}
