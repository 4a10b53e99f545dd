package depcheck

import (
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// programs maps every program the tree runs to the Debian package that
// carries it. A program added to the code must be added here, with its
// package in TEST_DEBS, VM_DEBS or bench/deps.sh.
var programs = map[string]string{
	"ip": "iproute2", "bridge": "iproute2", "tc": "iproute2",
	"ping":    "iputils-ping",
	"tcpdump": "tcpdump",
	"ethtool": "ethtool",
	"sysctl":  "procps", "ps": "procps", "pgrep": "procps", "pkill": "procps",
	"curl":  "curl",
	"capsh": "libcap2-bin",
	"perf":  "linux-perf",
	"make":  "make", "gcc": "gcc", "pkg-config": "pkg-config",
	"dpdk-testpmd":       "dpdk",
	"clang-14":           "clang-14",
	"llvm-strip-14":      "llvm-14",
	"qemu-system-x86_64": "qemu-system-x86",
	"busybox":            "busybox-static",
	"poweroff":           "busybox-static", // init.sh: a busybox applet
	"cpio":               "cpio",
	"depmod":             "kmod", "modprobe": "kmod", "insmod": "kmod",
	"xz":   "xz-utils",
	"zstd": "zstd",
	// Essential or required packages, on every Debian system.
	"prlimit": "util-linux", "setpriv": "util-linux", "taskset": "util-linux",
	"switch_root": "util-linux", "mount": "mount",
	"stdbuf": "coreutils", "uname": "coreutils", "timeout": "coreutils",
	"cat": "coreutils", "mkdir": "coreutils", "rm": "coreutils", "mv": "coreutils",
	"cp": "coreutils", "chmod": "coreutils", "ls": "coreutils", "date": "coreutils",
	"basename": "coreutils", "dirname": "coreutils", "mktemp": "coreutils",
	"tr": "coreutils", "wc": "coreutils", "sort": "coreutils", "head": "coreutils",
	"tail": "coreutils", "readlink": "coreutils", "id": "coreutils", "env": "coreutils",
	"sleep": "coreutils", "sync": "coreutils", "touch": "coreutils", "cmp": "diffutils",
	"sha256sum": "coreutils", "ln": "coreutils", "stat": "coreutils",
	"sh": "dash", "bash": "bash", "grep": "grep", "sed": "sed", "awk": "mawk",
	"gzip": "gzip", "find": "findutils", "tar": "tar",
	"dpkg": "dpkg", "dpkg-deb": "dpkg", "apt-get": "apt", "apt-cache": "apt",
	"unshare": "util-linux",
	// Not Debian packages to install: the README has the Go toolchain
	// installed first, and git made the checkout.
	"go": "", "git": "",
}

// essential packages are on every Debian 12 system (Essential: yes, or
// Priority: required), so no list needs to name them.
var essential = map[string]bool{
	"coreutils": true, "util-linux": true, "mount": true, "dash": true, "bash": true,
	"grep": true, "sed": true, "mawk": true, "gzip": true, "findutils": true, "tar": true,
	"dpkg": true, "apt": true, "diffutils": true,
}

// indirect are the call sites that run a program named by a variable:
// file and expression → the programs it can be ("" for a binary the test
// builds itself).
var indirect = map[string][]string{
	"virtif/xdp/lifecycle_test.go os.Args[0]": {""},
	"bpf/attach_test.go os.Args[0]":           {""},
	"virtif/tap_test.go tcpdump":              {"tcpdump"},
	"cmd/virtif-xdp/traffic_test.go tcpdump":  {"tcpdump"},
	"cmd/virtif-xdp/main_test.go bin":         {""},
	"cmd/virtif-xdp/capture_test.go bin":      {""},
	"cmd/virtif-xdp/run_test.go bin":          {""},
	"cmd/virtif-xdp/privs_test.go bin":        {""},
	"cmd/virtif-xdp/switch_bench_test.go bin": {""},
	"cmd/virtif-xdp/switch_test.go l.bin":     {""},
	"cmd/virtif-xdp/safety_test.go tool":      {"prlimit", "setpriv"},
	"bench/ref/reftest/reftest.go tool":       {"make", "gcc", "pkg-config"},
	"bench/ref/reftest/reftest.go r.Binary":   {""},
	"bench/harness/latency.go bin":            {""},
	"bench/harness/main.go bin":               {""},
	"bench/ref/dpdk/main.go *testpmd":         {"dpdk-testpmd"},
	"cmd/virtif-xdp/safety_test.go cmd[0]":    {"ip", "bridge"},
	"cmd/virtif-xdp/privs_test.go argv[0]":    {"", "capsh"},
	"internal/depcheck/bpfcheck_test.go tool": {"clang-14", "llvm-strip-14", "git"},
	"cmd/virtif-xdp/zerocopy_test.go bin":     {""},
	"internal/netlab/netlab.go name":          {""}, // Lab.Command itself: its callers are scanned
}

// shellSkip are words in command position of a shell script that are not
// programs: keywords and builtins of sh.
var shellSkip = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true, "for": true,
	"while": true, "until": true, "do": true, "done": true, "case": true, "esac": true,
	"in": true, "function": true, "return": true, "exit": true, "set": true,
	"shift": true, "export": true, "local": true, "trap": true, "eval": true,
	"read": true, "cd": true, "echo": true, "printf": true, "test": true, "[": true,
	":": true, "true": true, "false": true, "wait": true, "break": true,
	"continue": true, "unset": true, ".": true, "ulimit": true, "umask": true,
	"command": true, "exec": true, "pwd": true, "kill": true, "!": true, "{": true, "}": true,
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", dir, err)
	}
	return dir
}

var (
	makeList  = regexp.MustCompile(`(?m)^(TEST_DEBS|VM_DEBS)\s*:?=(.*)$`)
	debsList  = regexp.MustCompile(`(?m)^debs="([^"]*)"`)
	needEntry = regexp.MustCompile(`need="\$need ([a-z0-9.+-]+)"`)
)

// installed returns the packages make deps, make vmdeps and
// bpf/generate.sh install, each with where it is named.
func installed(t *testing.T, root string) map[string]string {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	pkgs := map[string]string{}
	// A package make deps installs is there before make test's race job;
	// one only make vmdeps installs is not (see the VM_DEBS check below).
	add := func(p, src string) {
		if pkgs[p] == "" || pkgs[p] == "Makefile VM_DEBS" {
			pkgs[p] = src
		}
	}
	mk := read("Makefile")
	for _, m := range makeList.FindAllStringSubmatch(mk, -1) {
		for _, p := range strings.Fields(m[2]) {
			add(p, "Makefile "+m[1])
		}
	}
	if !strings.Contains(mk, "sh bench/deps.sh") {
		t.Error("make deps does not run bench/deps.sh")
	}
	for _, m := range debsList.FindAllStringSubmatch(read("bench/deps.sh"), -1) {
		for _, p := range strings.Fields(m[1]) {
			add(p, "bench/deps.sh")
		}
	}
	for _, m := range needEntry.FindAllStringSubmatch(read("bpf/generate.sh"), -1) {
		add(m[1], "bpf/generate.sh")
	}
	if len(pkgs) == 0 {
		t.Fatal("no package lists found")
	}
	return pkgs
}

// use is one program run at one place of the tree.
type use struct{ prog, where string }

// goExecs returns the programs the Go file runs, and the call sites that
// name theirs by a variable not in indirect.
func goExecs(t *testing.T, root, rel string) (uses []use, unknown []string) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join(root, rel), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	lit := func(e ast.Expr) (string, bool) {
		for {
			b, ok := e.(*ast.BinaryExpr)
			if !ok {
				break
			}
			e = b.X
		}
		l, ok := e.(*ast.BasicLit)
		if !ok || l.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(l.Value)
		return s, err == nil
	}
	add := func(n ast.Node, prog string) {
		uses = append(uses, use{prog, fset.Position(n.Pos()).String()})
	}
	// argv follows a program's arguments into the programs it runs in
	// turn: ip netns exec NS PROG, sh -c SCRIPT.
	argv := func(n ast.Node, prog string, args []ast.Expr) {
		add(n, prog)
		for i := 0; i < len(args); i++ {
			s, ok := lit(args[i])
			if !ok {
				continue
			}
			switch {
			case prog == "ip" && s == "exec" && i+2 < len(args):
				if p, ok := lit(args[i+2]); ok {
					add(n, p)
				}
			case (prog == "sh" || prog == "bash") && s == "-c" && i+1 < len(args):
				if script, ok := lit(args[i+1]); ok {
					for _, p := range shellCommands(script) {
						add(n, p)
					}
				}
			}
		}
	}
	site := func(n ast.Node, e ast.Expr) {
		var b strings.Builder
		_ = printer.Fprint(&b, fset, e)
		key := rel + " " + b.String()
		progs, ok := indirect[key]
		if !ok {
			unknown = append(unknown, fset.Position(n.Pos()).String()+": "+b.String())
		}
		for _, p := range progs {
			if p != "" {
				add(n, p)
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		args := call.Args
		pkg, _ := sel.X.(*ast.Ident)
		switch {
		case pkg != nil && pkg.Name == "exec" && (sel.Sel.Name == "Command" || sel.Sel.Name == "LookPath" || sel.Sel.Name == "CommandContext"):
			if sel.Sel.Name == "CommandContext" {
				args = args[1:]
			}
			if len(args) == 0 {
				return true
			}
			if p, ok := lit(args[0]); ok {
				argv(call, p, args[1:])
			} else {
				site(call, args[0])
			}
		case (sel.Sel.Name == "Run" || sel.Sel.Name == "Command") && len(args) >= 2:
			// netlab's Lab.Run and Lab.Command(side, name, args...);
			// t.Run("name", fn) has its literal first.
			if _, ok := lit(args[0]); ok {
				return true
			}
			if _, ok := args[1].(*ast.FuncLit); ok {
				return true
			}
			if p, ok := lit(args[1]); ok {
				argv(call, p, args[2:])
			} else {
				site(call, args[1])
			}
		}
		return true
	})
	return uses, unknown
}

var (
	shellFunc = regexp.MustCompile(`(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)\(\)\s*\{(.*)$`)
	shellSep  = regexp.MustCompile(`\$\(|&&|\|\||[;|&({}` + "`" + `]|\bthen\b|\bdo\b|\belse\b`)
	shellVar  = regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)=([a-z][a-z0-9_.+-]*)$`)
	shellWord = regexp.MustCompile(`^[a-z][a-z0-9_.+-]*$`)
	heredoc   = regexp.MustCompile(`<<-?\s*'?([A-Z]+)'?`)
	caseArm   = regexp.MustCompile(`^\s*[^\s()$;|]+(\s*\|\s*[^\s()$;|]+)*\)`)
)

// code blanks out of one line of shell what is data: quoted text (except
// what a $( ) inside double quotes runs) and arithmetic $(( )).
func code(line string) string {
	const (
		cmd   = iota // code, at the top or inside $( )
		dq           // inside "..."
		arith        // inside $(( ))
	)
	stack := []int{cmd}
	b := []byte(line)
	out := make([]byte, len(b))
	for i := 0; i < len(b); i++ {
		top := stack[len(stack)-1]
		c := b[i]
		out[i] = '_'
		switch {
		case c == '\\' && i+1 < len(b):
			i++
			out[i] = ' '
		case strings.HasPrefix(line[i:], "$(("):
			stack = append(stack, arith)
			i += 2
			out[i-1], out[i] = ' ', ' '
		case strings.HasPrefix(line[i:], "$("):
			stack = append(stack, cmd)
			out[i], out[i+1] = '$', '('
			i++
		case top == arith && strings.HasPrefix(line[i:], "))"):
			stack = stack[:len(stack)-1]
			i++
			out[i] = ' '
		case c == ')' && top == cmd && len(stack) > 1:
			stack = stack[:len(stack)-1]
			out[i] = ')'
		case c == '"' && top == dq:
			stack = stack[:len(stack)-1]
		case c == '"' && top == cmd:
			stack = append(stack, dq)
		case c == '\'' && top == cmd:
			if j := strings.IndexByte(line[i+1:], '\''); j >= 0 {
				for k := i + 1; k <= i+1+j; k++ {
					out[k] = '_'
				}
				i += j + 1
			}
		case top == cmd:
			out[i] = c
		}
	}
	return string(out)
}

// shellCommands returns the words in command position of a shell script:
// the programs it runs (a heuristic: first word of each simple command,
// keywords, builtins and the script's own functions left out, "exec P"
// and "busybox P" followed).
func shellCommands(script string) []string {
	// The script's functions are not programs; one that runs its
	// arguments (inns() { ip netns exec "$ns" "$@"; }) is a wrapper.
	funcs := map[string]bool{}
	for _, m := range shellFunc.FindAllStringSubmatch(script, -1) {
		funcs[m[1]] = strings.Contains(m[2], `"$@"`)
	}
	// Variables set once to a program's name (CC=clang-14) stand for it.
	vars := map[string]string{}
	for _, m := range shellVar.FindAllStringSubmatch(script, -1) {
		vars[m[1]] = m[2]
	}
	var out []string
	var inDoc string
	for _, line := range strings.Split(script, "\n") {
		if inDoc != "" {
			if strings.TrimSpace(line) == inDoc {
				inDoc = ""
			}
			continue
		}
		if m := heredoc.FindStringSubmatch(line); m != nil {
			inDoc = m[1]
		}
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "#") {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		for k, v := range vars {
			line = strings.NewReplacer(`"$`+k+`"`, v, `"${`+k+`}"`, v).Replace(line)
		}
		line = strings.ReplaceAll(caseArm.ReplaceAllString(code(line), ""), ")", " ")
		for _, part := range shellSep.Split(line, -1) {
			out = append(out, simpleCommand(strings.Fields(part), funcs)...)
		}
	}
	return out
}

// simpleCommand returns the program a simple command runs: its first word
// after assignments, past the wrappers that run their arguments (exec,
// env, timeout, busybox, the script's own functions); "command -v P" asks
// for P.
func simpleCommand(words []string, funcs map[string]bool) []string {
	var out []string
	for len(words) > 0 {
		w := words[0]
		switch {
		case strings.Contains(w, "=") || w == "!" || w == "exec" || w == "env" || funcs[w]:
			words = words[1:]
			continue
		case isFunc(funcs, w):
			return out
		case w == "busybox":
			out = append(out, w)
			words = words[1:]
			continue
		case w == "timeout":
			words = words[1:]
			for len(words) > 0 && strings.HasPrefix(words[0], "-") {
				if words[0] == "-k" || words[0] == "-s" {
					words = words[1:]
				}
				words = words[1:]
			}
			if len(words) > 0 {
				words = words[1:] // the duration
			}
			out = append(out, "timeout")
			continue
		case w == "command" && len(words) > 2 && words[1] == "-v":
			words = words[2:]
		case w == "command" || w == "case" || w == "for":
			return out
		}
		break
	}
	if len(words) == 0 {
		return out
	}
	w := words[0]
	if strings.HasPrefix(w, "/") { // an absolute path: its base name
		w = filepath.Base(w)
	}
	if shellWord.MatchString(w) && !shellSkip[w] && !strings.HasSuffix(w, ".sh") {
		out = append(out, w)
	}
	return out
}

func isFunc(funcs map[string]bool, w string) bool {
	_, ok := funcs[w]
	return ok
}

// TestMakeDepsInstallTools fails when the tree runs a program whose Debian
// package neither make deps nor make vmdeps installs (a fresh machine's
// make test would fail there), and when the tree runs a program this test
// does not know (add it to programs, with its package to a list).
func TestMakeDepsInstallTools(t *testing.T) {
	root := repoRoot(t)
	pkgs := installed(t, root)
	var uses []use
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") && d.Name() != ".ci" || d.Name() == "results" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(rel, ".go"):
			u, unknown := goExecs(t, root, rel)
			uses = append(uses, u...)
			for _, s := range unknown {
				t.Errorf("%s runs a program named by a variable: add it to indirect with the programs it can be", s)
			}
		case strings.HasSuffix(rel, ".sh") || rel == filepath.Join(".ci", "run"):
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, p := range shellCommands(string(b)) {
				uses = append(uses, use{p, rel})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, u := range uses {
		pkg, ok := programs[u.prog]
		switch {
		case !ok:
			t.Errorf("%s runs %q, which this test does not know: add it to programs with its Debian package, and the package to TEST_DEBS, VM_DEBS or bench/deps.sh", u.where, u.prog)
		case pkg == "" || essential[pkg]:
		case pkgs[pkg] == "Makefile VM_DEBS" && !strings.HasPrefix(u.where, filepath.Join(root, "internal", "vmlab")+"/") && !strings.HasPrefix(u.where, "internal/vmlab/"):
			// make test runs the race and fuzz jobs before kernels-ci
			// brings in make vmdeps.
			t.Errorf("%s runs %s (Debian package %s), which only make vmdeps installs: make test runs it before vmdeps", u.where, u.prog, pkg)
		case pkgs[pkg] != "":
		default:
			t.Errorf("%s runs %s (Debian package %s), which neither make deps nor make vmdeps installs", u.where, u.prog, pkg)
		}
		seen[u.prog] = true
	}
	var names []string
	for p := range seen {
		names = append(names, p)
	}
	sort.Strings(names)
	t.Logf("programs the tree runs: %s", strings.Join(names, " "))
	// The scan itself must see what the tree is known to run.
	for _, p := range []string{"ip", "ping", "tcpdump", "ethtool", "sysctl", "qemu-system-x86_64", "clang-14"} {
		if !seen[p] {
			t.Errorf("the scan did not find %s, which the tree runs: the scanner is broken", p)
		}
	}
}

// The shell scanner finds programs in command position only.
func TestShellCommands(t *testing.T) {
	got := shellCommands("set -eu\nf() { ip link; }\nx=$(ethtool -l a | awk '{ print $2 }')\n# tcpdump\nf\ncase $a in\na | b) ;;\n*.xz) xz -dc \"$p\" ;;\nesac\ninns() { ip netns exec \"$ns\" \"$@\"; }\ninns tc qdisc\nCC=clang-14\ncommand -v \"$CC\" || x=$(f a b)\n[ -f x ] || sysctl -w a=b\necho 'curl is data'\n")
	want := []string{"ip", "ethtool", "awk", "xz", "ip", "tc", "clang-14", "sysctl"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("shellCommands = %q, want %q", got, want)
	}
}
