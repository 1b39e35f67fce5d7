package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// The decoder walks goccy/go-yaml's AST itself rather than calling
// yaml.Unmarshal, because Unmarshal stops at the first problem and the
// contract is every problem at once. It follows goccy's conventions (yaml
// tags, then json tags, then the lower-cased field name; ",inline"), and
// hands any type with its own unmarshaler (yaml.BytesUnmarshaler,
// yaml.InterfaceUnmarshaler, yaml.NodeUnmarshaler, encoding.TextUnmarshaler)
// and interface values to yaml.NodeToValue with yaml.Strict().
type decoder struct {
	file    string
	errs    Errors
	idx     *index
	anchors map[string]ast.Node
	failed  map[string]bool // paths whose value could not be decoded
	budget  int             // nodes left to decode (bounds alias expansion)

	// merging holds the mappings whose merge keys are being expanded, and
	// merged each merge source's entries once expanded, so that a source
	// merged many times (or by many mappings) is expanded only once.
	merging map[*ast.MappingNode]bool
	merged  map[*ast.MappingNode]mergeSource
	quiet   *decoder // see quietDecoder
}

// mergeSource is a merged mapping's entries, and whether expanding them
// reported a problem.
type mergeSource struct {
	entries []*ast.MappingValueNode
	bad     bool
}

// maxNodes bounds the number of values one file may decode to, so that
// nested aliases cannot blow up (the "billion laughs" document).
const maxNodes = 1 << 20

// maxMergeDepth bounds how deep merge sources may merge others.
const maxMergeDepth = 20

// nodeDecoder is implemented by types that decode their own node (Device).
type nodeDecoder interface {
	decodeNode(d *decoder, path string, n ast.Node)
}

// defaulter is implemented by list elements that have defaults.
type defaulter interface{ setDefaults() }

var (
	durationType = reflect.TypeFor[time.Duration]()
	sizeType     = reflect.TypeFor[msg.Size]()
	priorityType = reflect.TypeFor[msg.Priority]()
)

func newDecoder(file string) *decoder {
	return &decoder{
		file:    file,
		idx:     &index{m: map[string]loc{}},
		anchors: map[string]ast.Node{},
		failed:  map[string]bool{},
		budget:  maxNodes,
	}
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }

// pos is a 1-based line and column.
type pos struct{ line, col int }

func posOf(n ast.Node) pos {
	switch m := n.(type) {
	case nil:
		return pos{1, 1}
	case *ast.MappingNode:
		if !m.IsFlowStyle && len(m.Values) > 0 {
			return posOf(m.Values[0].Key) // Start is the first ':'
		}
	case *ast.MappingValueNode:
		return posOf(m.Key)
	case *ast.SequenceEntryNode:
		return tokenPos(m.Start)
	}
	return tokenPos(n.GetToken())
}

func tokenPos(t *token.Token) pos {
	if t == nil || t.Position == nil || t.Position.Line == 0 {
		return pos{1, 1}
	}
	return pos{t.Position.Line, t.Position.Column}
}

func (d *decoder) errorf(p pos, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: p.line, Col: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
	d.failed[path] = true
}

// parse parses data into the root node of its one document, indexing the
// positions of every key. It returns nil for an empty document or when the
// YAML is malformed (the problem is then in d.errs).
func (d *decoder) parse(data []byte) ast.Node {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		d.yamlError(pos{1, 1}, "", err)
		return nil
	}
	var root ast.Node
	for i, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if i > 0 && root != nil {
			d.errorf(posOf(doc.Body), "", "only one YAML document is allowed")
			break
		}
		root = doc.Body
	}
	if root == nil {
		return nil
	}
	d.collectAnchors(root, 0)
	if !d.checkExpansion(root) {
		return nil
	}
	d.idx.build(d, "", nil, root, 0)
	return root
}

// yamlError records an error from goccy/go-yaml at its token, or at p.
func (d *decoder) yamlError(p pos, path string, err error) {
	var ye yaml.Error
	if errors.As(err, &ye) {
		if t := ye.GetToken(); t != nil {
			p = tokenPos(t)
		}
		d.errorf(p, path, "%s", ye.GetMessage())
		return
	}
	d.errorf(p, path, "%v", err)
}

func (d *decoder) collectAnchors(n ast.Node, depth int) {
	if n == nil || depth > 1000 {
		return
	}
	switch n := n.(type) {
	case *ast.AnchorNode:
		if name := scalarString(n.Name); name != "" {
			d.anchors[name] = n.Value
		}
		d.collectAnchors(n.Value, depth+1)
	case *ast.TagNode:
		d.collectAnchors(n.Value, depth+1)
	case *ast.MappingNode:
		for _, mv := range n.Values {
			d.collectAnchors(mv.Value, depth+1)
		}
	case *ast.SequenceNode:
		for _, v := range n.Values {
			d.collectAnchors(v, depth+1)
		}
	}
}

// resolve follows anchors, aliases and tags to the node that holds the
// value. It reports an unknown alias and returns nil.
func (d *decoder) resolve(path string, n ast.Node) ast.Node {
	for range 100 {
		switch m := n.(type) {
		case *ast.AnchorNode:
			n = m.Value
		case *ast.TagNode:
			n = m.Value
		case *ast.AliasNode:
			name := scalarString(m.Value)
			target, ok := d.anchors[name]
			if !ok {
				if d != nil {
					d.errorf(posOf(m), path, "unknown alias *%s", name)
				}
				return nil
			}
			n = target
		default:
			return n
		}
	}
	return nil
}

// entries lists a mapping's key/value pairs with merge keys (<<: *base)
// expanded; keys written in the mapping itself override merged ones.
//
// Each merge source is expanded once per decoder; a source that merges a
// mapping being expanded (itself, directly or through others) is an error.
func (d *decoder) entries(path string, m *ast.MappingNode, depth int) []*ast.MappingValueNode {
	if d.merging == nil {
		d.merging = map[*ast.MappingNode]bool{}
		d.merged = map[*ast.MappingNode]mergeSource{}
	}
	d.merging[m] = true
	defer delete(d.merging, m)
	var merged, own []*ast.MappingValueNode
	for _, mv := range m.Values {
		if _, ok := mv.Key.(*ast.MergeKeyNode); !ok {
			own = append(own, mv)
			continue
		}
		if depth > maxMergeDepth {
			d.errorf(posOf(mv.Value), path, "merge keys nest more than %d deep", maxMergeDepth)
			continue
		}
		v := d.resolve(path, mv.Value)
		var srcs []ast.Node
		if s, ok := v.(*ast.SequenceNode); ok {
			srcs = s.Values
		} else {
			srcs = []ast.Node{v}
		}
		for _, src := range srcs {
			sm, ok := d.resolve(path, src).(*ast.MappingNode)
			if !ok {
				d.errorf(posOf(mv.Value), path, "merge key << wants a mapping or a list of mappings")
				continue
			}
			if d.merging[sm] {
				d.errorf(posOf(src), path, "merge key << refers back to the mapping that holds it")
				continue
			}
			ms, done := d.merged[sm]
			if !done {
				errs := len(d.errs)
				ms = mergeSource{entries: d.entries(path, sm, depth+1)}
				ms.bad = len(d.errs) > errs
				d.merged[sm] = ms
			} else if ms.bad {
				d.failed[path] = true
			}
			merged = append(merged, ms.entries...)
		}
	}
	if len(merged) == 0 {
		return own
	}
	mine := map[string]bool{}
	for _, mv := range own {
		mine[keyString(mv.Key)] = true
	}
	out := make([]*ast.MappingValueNode, 0, len(merged)+len(own))
	seen := map[string]bool{}
	for i := len(merged) - 1; i >= 0; i-- { // the first merged source wins
		k := keyString(merged[i].Key)
		if !mine[k] && !seen[k] {
			seen[k] = true
			out = append(out, merged[i])
		}
	}
	return append(out, own...)
}

func keyString(k ast.MapKeyNode) string {
	switch k := k.(type) {
	case *ast.MappingKeyNode:
		return scalarString(k.Value)
	case *ast.MergeKeyNode:
		return "<<"
	}
	return scalarString(k)
}

// scalarString returns a scalar's text: a string's value, or the source
// text of a number or bool ("0123" stays "0123").
func scalarString(n ast.Node) string {
	switch n := n.(type) {
	case nil:
		return ""
	case *ast.StringNode:
		return n.Value
	case *ast.LiteralNode:
		return n.Value.Value
	case *ast.NullNode:
		return ""
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return n.GetToken().Value
	}
	return ""
}

func isScalar(n ast.Node) bool {
	switch n.(type) {
	case *ast.StringNode, *ast.LiteralNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return true
	}
	return false
}

// describe names what a node holds, for "want X, got Y" messages.
func describe(n ast.Node) string {
	switch n := n.(type) {
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return strconv.Quote(scalarString(n))
	case *ast.NullNode:
		return "nothing"
	}
	return scalarString(n)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func elem(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// decodeValue decodes n into v (addressable), reporting every problem.
func (d *decoder) decodeValue(path string, n ast.Node, v reflect.Value) {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			d.errorf(posOf(n), path, "document too large (too many nodes after expanding aliases)")
		}
		return
	}
	n = d.resolve(path, n)
	if n == nil {
		return
	}
	if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
		nd.decodeNode(d, path, n)
		return
	}
	if _, null := n.(*ast.NullNode); null {
		if v.Kind() != reflect.Struct { // a null section keeps its defaults
			v.SetZero()
		}
		return
	}
	switch v.Type() {
	case durationType:
		d.decodeDuration(path, n, v)
		return
	case sizeType:
		d.decodeSize(path, n, v)
		return
	case priorityType:
		p, err := msg.ParsePriority(scalarString(n))
		if !isScalar(n) || err != nil {
			d.errorf(posOf(n), path, "%s: want high, normal or low, got %s", path, describe(n))
			return
		}
		v.Set(reflect.ValueOf(p))
		return
	}
	if hasUnmarshaler(v) {
		d.delegate(path, n, v)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(path, n, v)
	case reflect.Slice:
		d.decodeSlice(path, n, v)
	case reflect.Map:
		d.decodeMap(path, n, v)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
			if df, ok := v.Interface().(defaulter); ok {
				df.setDefaults()
			}
		}
		d.decodeValue(path, n, v.Elem())
	case reflect.String:
		if !isScalar(n) {
			d.errorf(posOf(n), path, "%s: want a string, got %s", path, describe(n))
			return
		}
		v.SetString(scalarString(n))
	case reflect.Bool:
		b, ok := n.(*ast.BoolNode)
		if !ok {
			d.errorf(posOf(n), path, "%s: want true or false, got %s", path, describe(n))
			return
		}
		v.SetBool(b.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.decodeInt(path, n, v)
	case reflect.Float32, reflect.Float64:
		var f float64
		switch m := n.(type) {
		case *ast.FloatNode:
			f = m.Value
		case *ast.IntegerNode:
			f, _ = strconv.ParseFloat(fmt.Sprint(m.Value), 64)
		default:
			d.errorf(posOf(n), path, "%s: want a number, got %s", path, describe(n))
			return
		}
		if v.OverflowFloat(f) {
			d.errorf(posOf(n), path, "%s: %s is out of range", path, scalarString(n))
			return
		}
		v.SetFloat(f)
	default:
		d.delegate(path, n, v)
	}
}

var (
	bytesUnmarshaler = reflect.TypeFor[yaml.BytesUnmarshaler]()
	ifaceUnmarshaler = reflect.TypeFor[yaml.InterfaceUnmarshaler]()
	nodeUnmarshaler  = reflect.TypeFor[yaml.NodeUnmarshaler]()
	textUnmarshaler  = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func hasUnmarshaler(v reflect.Value) bool {
	pt := v.Addr().Type()
	return pt.Implements(bytesUnmarshaler) || pt.Implements(ifaceUnmarshaler) ||
		pt.Implements(nodeUnmarshaler) || pt.Implements(textUnmarshaler)
}

// delegate lets goccy/go-yaml decode n into v, strictly.
func (d *decoder) delegate(path string, n ast.Node, v reflect.Value) {
	if err := yaml.NodeToValue(n, v.Addr().Interface(), yaml.Strict()); err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) {
			d.errorf(tokenPos(ye.GetToken()), path, "%s: %s", path, ye.GetMessage())
			return
		}
		d.errorf(posOf(n), path, "%s: %v", path, err)
	}
}

func (d *decoder) decodeStruct(path string, n ast.Node, v reflect.Value) {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		d.errorf(posOf(n), path, "%s: want a mapping, got %s", orTop(path), describe(n))
		return
	}
	fs := fieldsOf(v.Type())
	for _, mv := range d.entries(path, m, 0) {
		k := keyString(mv.Key)
		f, ok := fs.byName[k]
		if !ok {
			d.unknownKey(path, mv, fs.names)
			continue
		}
		d.decodeValue(join(path, k), mv.Value, v.FieldByIndex(f))
	}
}

func orTop(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

// unknownKey reports a key that has no field, with the closest known name.
func (d *decoder) unknownKey(path string, mv *ast.MappingValueNode, known []string) {
	k := keyString(mv.Key)
	where := ""
	if path != "" {
		where = " in " + path
	}
	hint := ""
	if s := suggest(k, known); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	} else if len(known) > 0 && len(known) <= 12 {
		hint = " (known keys: " + strings.Join(known, ", ") + ")"
	}
	d.errorf(posOf(mv.Key), join(path, k), "unknown key %q%s%s", k, where, hint)
}

func (d *decoder) decodeSlice(path string, n ast.Node, v reflect.Value) {
	s, ok := n.(*ast.SequenceNode)
	if !ok {
		d.errorf(posOf(n), path, "%s: want a list, got %s", path, describe(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(s.Values), len(s.Values))
	for i, item := range s.Values {
		e := out.Index(i)
		if df, ok := e.Addr().Interface().(defaulter); ok {
			df.setDefaults()
		}
		d.decodeValue(elem(path, i), item, e)
	}
	v.Set(out)
}

func (d *decoder) decodeMap(path string, n ast.Node, v reflect.Value) {
	if v.Type().Key().Kind() != reflect.String {
		d.delegate(path, n, v)
		return
	}
	m, ok := n.(*ast.MappingNode)
	if !ok {
		d.errorf(posOf(n), path, "%s: want a mapping, got %s", path, describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for _, mv := range d.entries(path, m, 0) {
		k := keyString(mv.Key)
		e := reflect.New(v.Type().Elem()).Elem()
		d.decodeValue(join(path, k), mv.Value, e)
		v.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e)
	}
}

func (d *decoder) decodeInt(path string, n ast.Node, v reflect.Value) {
	in, ok := n.(*ast.IntegerNode)
	if !ok {
		d.errorf(posOf(n), path, "%s: want an integer, got %s", path, describe(n))
		return
	}
	switch x := in.Value.(type) {
	case int64:
		if v.CanInt() && !v.OverflowInt(x) {
			v.SetInt(x)
			return
		}
		if v.CanUint() && x >= 0 && !v.OverflowUint(uint64(x)) {
			v.SetUint(uint64(x))
			return
		}
		if v.CanUint() && x < 0 {
			d.errorf(posOf(n), path, "%s: must not be negative, got %d", path, x)
			return
		}
	case uint64:
		if v.CanUint() && !v.OverflowUint(x) {
			v.SetUint(x)
			return
		}
		if v.CanInt() && x <= math.MaxInt64 && !v.OverflowInt(int64(x)) {
			v.SetInt(int64(x))
			return
		}
	}
	d.errorf(posOf(n), path, "%s: %s is out of range", path, scalarString(n))
}

func (d *decoder) decodeDuration(path string, n ast.Node, v reflect.Value) {
	switch m := n.(type) {
	case *ast.IntegerNode:
		if scalarString(m) == "0" {
			v.SetInt(0)
			return
		}
		x := scalarString(m)
		d.errorf(posOf(n), path, "%s: duration %s needs a unit: %sms, %ss, %sm or %sh", path, x, x, x, x, x)
		return
	case *ast.StringNode:
		t, err := time.ParseDuration(strings.TrimSpace(m.Value))
		if err == nil {
			v.SetInt(int64(t))
			return
		}
	}
	d.errorf(posOf(n), path, "%s: bad duration %s (want a number with a unit: 500ms, 5s, 2m, 168h)", path, describe(n))
}

func (d *decoder) decodeSize(path string, n ast.Node, v reflect.Value) {
	switch m := n.(type) {
	case *ast.IntegerNode:
		if x, ok := m.Value.(int64); ok && x < 0 {
			d.errorf(posOf(n), path, "%s: %v", path, errNegativeSize)
			return
		}
		s, err := msg.ParseSize(scalarString(m))
		if err == nil {
			v.SetInt(int64(s))
			return
		}
	case *ast.StringNode, *ast.FloatNode:
		s, err := msg.ParseSize(scalarString(m))
		if err != nil {
			d.errorf(posOf(n), path, "%s: %v", path, err)
			return
		}
		v.SetInt(int64(s))
		return
	}
	d.errorf(posOf(n), path, "%s: bad size %s (want bytes: 4096, 4KiB, 512MiB)", path, describe(n))
}

var errNegativeSize = errors.New("size must not be negative")

// fields maps a struct's YAML key names to field index paths.
type fields struct {
	byName map[string][]int
	names  []string
}

var fieldCache sync.Map // reflect.Type -> *fields

func fieldsOf(t reflect.Type) *fields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*fields)
	}
	fs := &fields{byName: map[string][]int{}}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("yaml")
			if tag == "" {
				tag = sf.Tag.Get("json")
			}
			if tag == "-" || (!sf.IsExported() && !sf.Anonymous) {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(append([]int(nil), prefix...), i)
			if slicesContains(strings.Split(opts, ","), "inline") && sf.Type.Kind() == reflect.Struct {
				walk(sf.Type, idx)
				continue
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(sf.Name)
			}
			if _, dup := fs.byName[name]; !dup {
				fs.names = append(fs.names, name)
			}
			fs.byName[name] = idx
		}
	}
	walk(t, nil)
	f, _ := fieldCache.LoadOrStore(t, fs)
	return f.(*fields)
}

func slicesContains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
