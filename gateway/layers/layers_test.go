package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pkg is the part of `go list -json` output the rules read.
type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Module     *struct {
		Path string
		Main bool
	}
}

// rule forbids the packages matched by from to import, directly or
// transitively, any package bad reports as forbidden.
type rule struct {
	from string            // module-relative pattern: "adapters/..." or "gateway/msg"
	bad  func(p *pkg) bool // the forbidden import
	why  string            // said after the forbidden package's name, if not obvious
}

// TestImportRules fails when a package imports across a layer boundary; the
// failure names the shortest import chain that does it.
func TestImportRules(t *testing.T) {
	root := moduleRoot(t)
	pkgs, mod := listDeps(t, root)
	rel := func(path string) string {
		if path == mod {
			return "."
		}
		return strings.TrimPrefix(path, mod+"/")
	}
	inModule := func(p *pkg, pattern string) bool {
		return p.Module != nil && p.Module.Main && matchPattern(rel(p.ImportPath), pattern)
	}
	name := func(p *pkg) string {
		if p.Module != nil && p.Module.Main {
			return rel(p.ImportPath)
		}
		return p.ImportPath
	}
	rules := []rule{
		{
			from: "adapters/...",
			bad: func(p *pkg) bool {
				return inModule(p, "store/...") || inModule(p, "cloudlink/...") ||
					strings.HasPrefix(p.ImportPath, "github.com/mochi-mqtt/") ||
					strings.HasPrefix(p.ImportPath, "github.com/eclipse/paho")
			},
		},
		{
			from: "gateway/msg",
			bad:  func(p *pkg) bool { return !p.Standard },
			why:  "outside the standard library",
		},
		{
			from: "store/...",
			bad: func(p *pkg) bool {
				return inModule(p, "gateway/...") && !inModule(p, "gateway/msg")
			},
			why: "a gateway package other than gateway/msg",
		},
		{
			from: "gateway/twins",
			bad: func(p *pkg) bool {
				return inModule(p, "gateway/...") && !inModule(p, "gateway/msg") && !inModule(p, "gateway/iothub") ||
					inModule(p, "store/...") || inModule(p, "cloudlink/...") ||
					strings.HasPrefix(p.ImportPath, "github.com/mochi-mqtt/") ||
					strings.HasPrefix(p.ImportPath, "github.com/eclipse/paho")
			},
			why: "the twins reach the hub, the store and the cloud through their own small interfaces",
		},
	}

	paths := slices.Sorted(maps.Keys(pkgs))
	for _, r := range rules {
		matched := false
		for _, path := range paths {
			p := pkgs[path]
			if !inModule(p, r.from) {
				continue
			}
			matched = true
			chain := importChain(pkgs, p, r.bad)
			if chain == nil {
				continue
			}
			names := make([]string, len(chain))
			for i, c := range chain {
				names[i] = name(c)
			}
			bad := names[len(names)-1]
			if r.why != "" {
				bad += " (" + r.why + ")"
			}
			t.Errorf("%s imports %s: %s", name(p), bad, strings.Join(names, " -> "))
		}
		if !matched {
			t.Errorf("no package of %s matches %s: the rule checks nothing", mod, r.from)
		}
	}
}

// importChain is the shortest chain of imports from p to a package bad
// reports, starting with p; nil when there is none.
func importChain(pkgs map[string]*pkg, p *pkg, bad func(*pkg) bool) []*pkg {
	prev := map[string]*pkg{p.ImportPath: nil}
	queue := []*pkg{p}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, imp := range cur.Imports {
			next, ok := pkgs[imp]
			if !ok {
				continue // "C" and the like
			}
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = cur
			if bad(next) {
				var chain []*pkg
				for q := next; q != nil; q = prev[q.ImportPath] {
					chain = append(chain, q)
				}
				slices.Reverse(chain)
				return chain
			}
			queue = append(queue, next)
		}
	}
	return nil
}

// matchPattern reports whether the module-relative path matches pattern,
// which is a path or a path ending in "/..." (the path and everything below).
func matchPattern(path, pattern string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// listDeps runs `go list -deps -json ./...` in root and returns the packages
// by import path, and the main module's path.
func listDeps(t *testing.T, root string) (map[string]*pkg, string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps -json ./...: %v\n%s", err, stderr.Bytes())
	}
	pkgs := make(map[string]*pkg)
	var mod string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
		if p.Module != nil && p.Module.Main {
			mod = p.Module.Path
		}
	}
	if mod == "" {
		t.Fatal("go list reported no package of the main module")
	}
	return pkgs, mod
}

// TestPackageDocs fails for a package (not main, not only _test.go files)
// none of whose files has a package comment.
func TestPackageDocs(t *testing.T) {
	root := moduleRoot(t)
	type key struct{ dir, name string }
	documented := make(map[key]bool)
	var order []key
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path == root {
				return nil
			}
			if name == "testdata" || name == "vendor" || name == "node_modules" ||
				strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
		dir, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		k := key{filepath.ToSlash(dir), f.Name.Name}
		if _, ok := documented[k]; !ok {
			order = append(order, k)
		}
		documented[k] = documented[k] || f.Doc != nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(order) == 0 {
		t.Fatalf("no Go package found under %s", root)
	}
	for _, k := range order {
		if !documented[k] {
			t.Errorf("%s: package %s has no package comment", k.dir, k.name)
		}
	}
}

// moduleRoot is the directory of the go.mod this package belongs to.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod)
}
