package tutorial

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The tutorial's copy (testdata/tutorialpb/user.proto) must stay the
// tutorial's: numbered as shippy's User, which the tutorial's clients
// call. And UserCreated must carry User's first four fields as they are,
// with the password's number and name reserved.
func TestProtoNumberingMatchesTheTutorial(t *testing.T) {
	ours := parseProto(t, filepath.Join("..", "..", "proto", "user", "user.proto"))
	tutorial := parseProto(t, filepath.Join("testdata", "tutorialpb", "user.proto"))

	wantUser := map[int]protoField{
		1: {"string", "id"}, 2: {"string", "name"}, 3: {"string", "company"}, 4: {"string", "email"}, 5: {"string", "password"},
	}
	for _, f := range []struct {
		name string
		msg  protoMessage
	}{{"the tutorial's User", tutorial["User"]}, {"shippy's User", ours["User"]}} {
		if !equalFields(f.msg.fields, wantUser) {
			t.Errorf("%s has fields %v; want %v", f.name, f.msg.fields, wantUser)
		}
	}

	ev, ok := ours["UserCreated"]
	if !ok {
		t.Fatal("proto/user/user.proto has no message UserCreated")
	}
	for n := 1; n <= 4; n++ {
		if ev.fields[n] != wantUser[n] {
			t.Errorf("UserCreated field %d is %v; want %v, as in the tutorial's User", n, ev.fields[n], wantUser[n])
		}
	}
	if f, ok := ev.fields[5]; ok {
		t.Errorf("UserCreated field 5 is %v; want it reserved (the tutorial's password)", f)
	}
	if !ev.reserved["5"] || !ev.reserved[`"password"`] {
		t.Errorf("UserCreated reserves %v; want 5 and \"password\"", ev.reserved)
	}
	for n, f := range ev.fields {
		if f.name == "password" {
			t.Errorf("UserCreated field %d is named password", n)
		}
	}
}

type protoField struct{ typ, name string }

type protoMessage struct {
	fields   map[int]protoField
	reserved map[string]bool // numbers, ranges and quoted names, as written
}

var (
	commentRe  = regexp.MustCompile(`//[^\n]*`)
	messageRe  = regexp.MustCompile(`(?s)message\s+(\w+)\s*\{(.*?)\n\}`)
	fieldRe    = regexp.MustCompile(`(?m)^\s*((?:repeated\s+)?[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;`)
	reservedRe = regexp.MustCompile(`(?m)^\s*reserved\s+([^;]+);`)
)

// parseProto reads the top-level messages of a flat proto3 file, as
// user.proto is: enough to compare numbering without a protobuf compiler.
func parseProto(t *testing.T, path string) map[string]protoMessage {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := commentRe.ReplaceAllString(string(src), "")
	out := map[string]protoMessage{}
	for _, m := range messageRe.FindAllStringSubmatch(text, -1) {
		msg := protoMessage{fields: map[int]protoField{}, reserved: map[string]bool{}}
		for _, f := range fieldRe.FindAllStringSubmatch(m[2], -1) {
			n, _ := strconv.Atoi(f[3])
			msg.fields[n] = protoField{typ: f[1], name: f[2]}
		}
		for _, r := range reservedRe.FindAllStringSubmatch(m[2], -1) {
			for _, item := range strings.Split(r[1], ",") {
				msg.reserved[strings.TrimSpace(item)] = true
			}
		}
		out[m[1]] = msg
	}
	if len(out) == 0 {
		t.Fatalf("%s: no messages found", path)
	}
	return out
}

func equalFields(a, b map[int]protoField) bool {
	if len(a) != len(b) {
		return false
	}
	for n, f := range a {
		if b[n] != f {
			return false
		}
	}
	return true
}
