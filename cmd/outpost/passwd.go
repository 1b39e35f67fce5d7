package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

var stdin io.Reader = os.Stdin

func cmdPasswd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("passwd", "< password\n\nReads one password line on stdin and prints its bcrypt hash for a hub.clients entry's password_hash.", stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost (4-31)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintf(stderr, "outpost passwd: read stdin: %v\n", err)
		return 1
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(stderr, "outpost passwd: empty password on stdin")
		return 1
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), *cost)
	if err != nil {
		fmt.Fprintf(stderr, "outpost passwd: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(h))
	return 0
}
