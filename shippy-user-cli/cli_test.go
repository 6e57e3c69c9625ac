package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go-micro.dev/v6/client"
	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"

	pb "github.com/shippy/shippy/proto/user"
)

// fakeUsers is an in-memory UserService with the real service's error codes.
type fakeUsers struct {
	mu        sync.Mutex
	users     []*pb.User
	passwords map[string]string // email -> password
	tokens    map[string]string // token -> user id
	admins    map[string]bool   // user id -> admin
	// sent is the token of the last Get or GetAll ("" without one).
	sent  string
	calls int
	// err, when set, is returned by every call.
	err error
	// hang, when set, makes every call wait for it to be closed, ignoring ctx.
	hang chan struct{}
}

var _ pb.UserService = (*fakeUsers)(nil)

func newFake(users ...*pb.User) *fakeUsers {
	f := &fakeUsers{passwords: map[string]string{}, tokens: map[string]string{}, admins: map[string]bool{}}
	for _, u := range users {
		f.users = append(f.users, u)
		f.passwords[u.Email] = u.Password
		u.Password = ""
	}
	return f
}

func (f *fakeUsers) enter() error {
	f.mu.Lock()
	f.calls++
	hang, err := f.hang, f.err
	f.mu.Unlock()
	if hang != nil {
		<-hang
	}
	return err
}

func (f *fakeUsers) Create(_ context.Context, in *pb.User, _ ...client.CallOption) (*pb.Response, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.passwords[in.Email]; ok {
		return nil, merrors.Conflict(serviceName, "email already registered")
	}
	u := &pb.User{Id: fmt.Sprintf("u%d", len(f.users)+1), Name: in.Name, Company: in.Company, Email: in.Email}
	f.users = append(f.users, u)
	f.passwords[in.Email] = in.Password
	tok := "token-" + u.Id
	f.tokens[tok] = u.Id
	return &pb.Response{User: u, Token: &pb.Token{Token: tok}}, nil
}

// caller checks the token ctx sends as the service's wrapper does. f.mu
// must be held.
func (f *fakeUsers) caller(ctx context.Context) (id string, admin bool, err error) {
	md, _ := metadata.FromContext(ctx)
	f.sent = strings.TrimPrefix(md["Authorization"], "Bearer ")
	id, ok := f.tokens[f.sent]
	if !ok {
		return "", false, merrors.Unauthorized(serviceName, "invalid or expired token")
	}
	return id, f.admins[id], nil
}

// admin registers a token of an admin who is not among the users.
func (f *fakeUsers) admin() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens["admin-token"], f.admins["admin"] = "admin", true
	return "admin-token"
}

func (f *fakeUsers) sentToken() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent
}

func (f *fakeUsers) Get(ctx context.Context, in *pb.User, _ ...client.CallOption) (*pb.Response, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	caller, admin, err := f.caller(ctx)
	if err != nil {
		return nil, err
	}
	if !admin && caller != in.Id {
		return nil, merrors.Forbidden(serviceName, "you may read only your own user")
	}
	for _, u := range f.users {
		if u.Id == in.Id {
			return &pb.Response{User: u}, nil
		}
	}
	return nil, merrors.NotFound(serviceName, "user not found")
}

func (f *fakeUsers) GetAll(ctx context.Context, _ *pb.Request, _ ...client.CallOption) (*pb.Response, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, admin, err := f.caller(ctx); err != nil {
		return nil, err
	} else if !admin {
		return nil, merrors.Forbidden(serviceName, "UserService.GetAll is for admins only")
	}
	return &pb.Response{Users: append([]*pb.User(nil), f.users...)}, nil
}

func (f *fakeUsers) Auth(_ context.Context, in *pb.User, _ ...client.CallOption) (*pb.Token, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pw, ok := f.passwords[in.Email]; !ok || pw != in.Password {
		return nil, merrors.Unauthorized(serviceName, "invalid email or password")
	}
	for _, u := range f.users {
		if u.Email == in.Email {
			tok := "token-" + u.Id
			f.tokens[tok] = u.Id
			return &pb.Token{Token: tok}, nil
		}
	}
	return nil, merrors.InternalServerError(serviceName, "fake: no user for %s", in.Email)
}

func (f *fakeUsers) ValidateToken(_ context.Context, in *pb.Token, _ ...client.CallOption) (*pb.Token, error) {
	if err := f.enter(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tokens[in.Token]; !ok {
		return nil, merrors.Unauthorized(serviceName, "token is invalid or expired")
	}
	return &pb.Token{Token: in.Token, Valid: true}, nil
}

func (f *fakeUsers) password(email string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.passwords[email]
}

func (f *fakeUsers) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type result struct {
	code           int
	stdout, stderr string
}

type runOpts struct {
	env    map[string]string
	prompt func(string) (string, bool, error)
}

// runWith runs the CLI against f. Unless o.env says otherwise, its
// configuration folder (the token file's) is a fresh one of the test's own.
func runWith(t *testing.T, f *fakeUsers, o runOpts, args ...string) result {
	t.Helper()
	env := map[string]string{"XDG_CONFIG_HOME": t.TempDir()}
	for k, v := range o.env {
		env[k] = v
	}
	var stdout, stderr bytes.Buffer
	a := &app{
		stdout:       &stdout,
		stderr:       &stderr,
		getenv:       func(k string) string { return env[k] },
		connect:      func() (pb.UserService, error) { return f, nil },
		prompt:       o.prompt,
		newRequestID: func() string { return testRequestID },
	}
	if a.prompt == nil {
		a.prompt = func(string) (string, bool, error) { return "", false, nil }
	}
	code := a.run(context.Background(), args)
	return result{code, stdout.String(), stderr.String()}
}

// testRequestID is the request id runWith's commands make; an error after
// a call ends with idSuffix.
const (
	testRequestID = "cli-test-0af7651916cd43dd"
	idSuffix      = "; request id: " + testRequestID
)

func runCLI(t *testing.T, f *fakeUsers, args ...string) result {
	t.Helper()
	return runWith(t, f, runOpts{}, args...)
}

// ewanSignedIn is a fake holding ewan, whose token is token-u1.
func ewanSignedIn() *fakeUsers {
	f := newFake(ewan())
	f.tokens["token-u1"] = "u1"
	return f
}

func ewan() *pb.User {
	return &pb.User{Id: "u1", Name: "Ewan Valentine", Company: "BBC", Email: "ewan@example.com", Password: "s3cret-pass"}
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, s)
	}
	return v
}

func wantOK(t *testing.T, args []string, r result) {
	t.Helper()
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("run(%q) = exit %d, stderr %q; want exit 0, no stderr", args, r.code, r.stderr)
	}
}

func TestCreate(t *testing.T) {
	args := []string{"create", "--name", "Ewan Valentine", "--email", "ewan@example.com", "--company", "BBC", "--password", "s3cret-pass"}

	t.Run("human", func(t *testing.T) {
		f := newFake()
		r := runCLI(t, f, args...)
		wantOK(t, args, r)
		if r.stdout != "Created: u1\n" {
			t.Errorf("run(%q) stdout = %q; want %q", args, r.stdout, "Created: u1\n")
		}
		if got := f.password("ewan@example.com"); got != "s3cret-pass" {
			t.Errorf("password sent = %q; want %q", got, "s3cret-pass")
		}
	})

	t.Run("json", func(t *testing.T) {
		jargs := append([]string{"--json"}, args...)
		r := runCLI(t, newFake(), jargs...)
		wantOK(t, jargs, r)
		got := decode[map[string]any](t, r.stdout)
		want := map[string]any{
			"user":  map[string]any{"id": "u1", "name": "Ewan Valentine", "company": "BBC", "email": "ewan@example.com"},
			"token": "token-u1",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("run(%q) JSON = %v; want %v", jargs, got, want)
		}
		if strings.Contains(r.stdout, "s3cret") {
			t.Errorf("run(%q) printed the password: %s", jargs, r.stdout)
		}
	})

	t.Run("duplicate", func(t *testing.T) {
		r := runCLI(t, newFake(ewan()), args...)
		want := "shippy-user-cli: create: email already registered (409)" + idSuffix + "\n"
		if r.code != exitRejected || r.stderr != want || r.stdout != "" {
			t.Errorf("run(%q) = exit %d, stderr %q, stdout %q; want exit 1, stderr %q", args, r.code, r.stderr, r.stdout, want)
		}
	})
}

func TestGet(t *testing.T) {
	t.Run("human", func(t *testing.T) {
		args := []string{"get", "--id", "u1", "--token", "token-u1"}
		r := runCLI(t, ewanSignedIn(), args...)
		wantOK(t, args, r)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "u1 Ewan Valentine ewan@example.com BBC" {
			t.Errorf("run(%q) stdout = %q; want a header and the line for u1", args, r.stdout)
		}
	})

	t.Run("json", func(t *testing.T) {
		args := []string{"get", "--id", "u1", "--json", "--token", "token-u1"}
		r := runCLI(t, ewanSignedIn(), args...)
		wantOK(t, args, r)
		got := decode[struct{ User userJSON }](t, r.stdout)
		want := userJSON{ID: "u1", Name: "Ewan Valentine", Company: "BBC", Email: "ewan@example.com"}
		if got.User != want {
			t.Errorf("run(%q) user = %+v; want %+v", args, got.User, want)
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		f := newFake(ewan())
		args := []string{"get", "--id", "nope", "--token", f.admin()}
		r := runCLI(t, f, args...)
		want := "shippy-user-cli: get: user not found (404)" + idSuffix + "\n"
		if r.code != exitRejected || r.stderr != want {
			t.Errorf("run(%q) = exit %d, stderr %q; want exit 1, %q", args, r.code, r.stderr, want)
		}
	})
}

func TestList(t *testing.T) {
	tests := []struct {
		name  string
		users []*pb.User
		json  bool
		check func(t *testing.T, stdout string)
	}{
		{"empty human", nil, false, func(t *testing.T, stdout string) {
			if stdout != "No users.\n" {
				t.Errorf("stdout = %q; want %q", stdout, "No users.\n")
			}
		}},
		{"empty json", nil, true, func(t *testing.T, stdout string) {
			got := decode[map[string]any](t, stdout)
			if users, ok := got["users"].([]any); !ok || len(users) != 0 {
				t.Errorf("JSON = %v; want users: []", got)
			}
		}},
		{"two human", []*pb.User{ewan(), {Id: "u2", Name: "Ann", Email: "ann@example.com"}}, false, func(t *testing.T, stdout string) {
			lines := strings.Split(strings.TrimSpace(stdout), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[1], "u1 ") || !strings.HasPrefix(lines[2], "u2 ") ||
				!strings.Contains(lines[2], "ann@example.com") {
				t.Errorf("stdout = %q; want header, u1, u2", stdout)
			}
		}},
		{"two json", []*pb.User{ewan(), {Id: "u2", Name: "Ann", Email: "ann@example.com"}}, true, func(t *testing.T, stdout string) {
			got := decode[struct{ Users []userJSON }](t, stdout)
			if len(got.Users) != 2 || got.Users[0].ID != "u1" || got.Users[1].Email != "ann@example.com" {
				t.Errorf("users = %+v; want u1 and ann@example.com", got.Users)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"list"}
			if tt.json {
				args = []string{"--json", "list"}
			}
			f := newFake(tt.users...)
			r := runWith(t, f, runOpts{env: map[string]string{"SHIPPY_TOKEN": f.admin()}}, args...)
			wantOK(t, args, r)
			tt.check(t, r.stdout)
		})
	}
}

func TestAuth(t *testing.T) {
	t.Run("human prints the bare token", func(t *testing.T) {
		args := []string{"auth", "--email", "ewan@example.com", "--password", "s3cret-pass"}
		r := runCLI(t, newFake(ewan()), args...)
		wantOK(t, args, r)
		if r.stdout != "token-u1\n" {
			t.Errorf("run(%q) stdout = %q; want %q", args, r.stdout, "token-u1\n")
		}
	})

	t.Run("json", func(t *testing.T) {
		args := []string{"--json", "auth", "--email", "ewan@example.com", "--password", "s3cret-pass"}
		r := runCLI(t, newFake(ewan()), args...)
		wantOK(t, args, r)
		if got := decode[map[string]string](t, r.stdout); got["token"] != "token-u1" {
			t.Errorf("run(%q) JSON = %v; want token token-u1", args, got)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		args := []string{"auth", "--email", "ewan@example.com", "--password", "wrong-pass"}
		r := runCLI(t, newFake(ewan()), args...)
		want := "shippy-user-cli: auth: invalid email or password (401)" + idSuffix + "\n"
		if r.code != exitRejected || r.stderr != want || r.stdout != "" {
			t.Errorf("run(%q) = exit %d, stderr %q, stdout %q; want exit 1, %q", args, r.code, r.stderr, r.stdout, want)
		}
	})
}

func TestPasswordSources(t *testing.T) {
	prompted := func(pw string) func(string) (string, bool, error) {
		return func(string) (string, bool, error) { return pw, true, nil }
	}
	tests := []struct {
		name   string
		flag   string
		env    string
		prompt func(string) (string, bool, error)
		want   string
	}{
		{"flag wins", "from-flag-1", "from-env-1", prompted("from-prompt"), "from-flag-1"},
		{"SHIPPY_PASSWORD", "", "from-env-1", prompted("from-prompt"), "from-env-1"},
		{"terminal prompt", "", "", prompted("from-prompt"), "from-prompt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			args := []string{"create", "--name", "N", "--email", "n@example.com"}
			if tt.flag != "" {
				args = append(args, "--password", tt.flag)
			}
			r := runWith(t, f, runOpts{env: map[string]string{"SHIPPY_PASSWORD": tt.env}, prompt: tt.prompt}, args...)
			wantOK(t, args, r)
			if got := f.password("n@example.com"); got != tt.want {
				t.Errorf("run(%q) sent password %q; want %q", args, got, tt.want)
			}
		})
	}

	t.Run("auth uses SHIPPY_PASSWORD", func(t *testing.T) {
		args := []string{"auth", "--email", "ewan@example.com"}
		r := runWith(t, newFake(ewan()), runOpts{env: map[string]string{"SHIPPY_PASSWORD": "s3cret-pass"}}, args...)
		wantOK(t, args, r)
		if r.stdout != "token-u1\n" {
			t.Errorf("run(%q) stdout = %q; want token-u1", args, r.stdout)
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
	}{
		{"valid", []string{"validate", "--token", "token-u1"}, exitOK, "valid\n"},
		{"invalid", []string{"validate", "--token", "garbage"}, exitRejected, "invalid: token is invalid or expired\n"},
		{"valid json", []string{"--json", "validate", "--token", "token-u1"}, exitOK, "{\n  \"valid\": true\n}\n"},
		{"invalid json", []string{"validate", "--json", "--token", "garbage"}, exitRejected,
			"{\n  \"valid\": false,\n  \"reason\": \"token is invalid or expired\"\n}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(ewan())
			f.tokens["token-u1"] = "u1"
			r := runCLI(t, f, tt.args...)
			if r.code != tt.wantCode || r.stdout != tt.wantStdout || r.stderr != "" {
				t.Errorf("run(%q) = exit %d, stdout %q, stderr %q; want exit %d, stdout %q, no stderr",
					tt.args, r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStdout)
			}
		})
	}
}

func TestDemo(t *testing.T) {
	t.Run("human, with an admin's token: every user", func(t *testing.T) {
		f := newFake(&pb.User{Id: "u1", Name: "Ann", Email: "ann@example.com", Password: "ann-password"})
		r := runCLI(t, f, "demo", "--token", f.admin())
		wantOK(t, []string{"demo"}, r)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 6 || lines[0] != "Created: u2" || lines[1] != "Users:" ||
			!strings.HasPrefix(lines[3], "u1 ") || !strings.HasPrefix(lines[4], "u2 ") ||
			lines[5] != "Your access token is: token-u2" {
			t.Errorf("demo stdout =\n%s\nwant Created, Users, header, u1, u2, token", r.stdout)
		}
	})

	t.Run("human, without a token: the sample user, read with its own token", func(t *testing.T) {
		f := newFake(&pb.User{Id: "u1", Name: "Ann", Email: "ann@example.com", Password: "ann-password"})
		r := runCLI(t, f, "demo")
		wantOK(t, []string{"demo"}, r)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 5 || lines[0] != "Created: u2" || lines[1] != "Your user (listing every user needs an admin's token):" ||
			!strings.HasPrefix(lines[3], "u2 ") || lines[4] != "Your access token is: token-u2" {
			t.Errorf("demo stdout =\n%s\nwant Created, the note, header, u2, token", r.stdout)
		}
		if got := f.sentToken(); got != "token-u2" {
			t.Errorf("demo read the sample user with token %q; want Create's token-u2", got)
		}
	})

	t.Run("a non-admin's token falls back too", func(t *testing.T) {
		f := ewanSignedIn()
		r := runCLI(t, f, "--json", "demo", "--token", "token-u1")
		wantOK(t, []string{"demo"}, r)
		got := decode[struct {
			Users    []userJSON
			AllUsers bool `json:"all_users"`
		}](t, r.stdout)
		if got.AllUsers || len(got.Users) != 1 || got.Users[0].ID != "u2" {
			t.Errorf("demo with a non-admin token = %+v; want only the sample user u2, all_users false", got)
		}
	})

	t.Run("json and a unique email each run", func(t *testing.T) {
		f := newFake()
		admin := f.admin()
		type out struct {
			User     userJSON
			Users    []userJSON
			AllUsers bool `json:"all_users"`
			Token    string
		}
		first := decode[out](t, runCLI(t, f, "--json", "demo", "--token", admin).stdout)
		r := runCLI(t, f, "demo", "--json", "--token", admin)
		wantOK(t, []string{"demo", "--json"}, r)
		second := decode[out](t, r.stdout)
		if first.User.Email == second.User.Email || !strings.HasSuffix(second.User.Email, "@example.com") {
			t.Errorf("demo emails = %q, %q; want two different sample addresses", first.User.Email, second.User.Email)
		}
		if len(second.Users) != 2 || !second.AllUsers || second.Token != "token-"+second.User.ID {
			t.Errorf("second demo = %+v; want all 2 users and the new user's token", second)
		}
	})
}

// Tokens for get and list come from --token, else SHIPPY_TOKEN, else the
// file auth saved; logout removes the file.
func TestTokenSources(t *testing.T) {
	f := ewanSignedIn()
	f.tokens["token-env"] = "u1"
	f.tokens["token-file"] = "u1"
	config := t.TempDir()
	path := filepath.Join(config, "shippy", "token")
	env := func(kv ...string) map[string]string {
		m := map[string]string{"XDG_CONFIG_HOME": config}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	get := func(t *testing.T, e map[string]string, extra ...string) (result, string) {
		t.Helper()
		args := append([]string{"get", "--id", "u1"}, extra...)
		r := runWith(t, f, runOpts{env: e}, args...)
		return r, f.sentToken()
	}

	t.Run("auth saves the token, readable by the user only", func(t *testing.T) {
		args := []string{"auth", "--email", "ewan@example.com", "--password", "s3cret-pass"}
		r := runWith(t, f, runOpts{env: env()}, args...)
		wantOK(t, args, r)
		if r.stdout != "token-u1\n" {
			t.Errorf("auth stdout = %q; want the bare token as before", r.stdout)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "token-u1\n" {
			t.Fatalf("token file = %q, %v; want token-u1", b, err)
		}
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			if info, err := os.Stat(p); err != nil || info.Mode().Perm() != want {
				t.Errorf("stat(%s) = %v, %v; want mode %04o", p, info.Mode().Perm(), err, want)
			}
		}
		// The file now holds token-file, to tell the sources apart.
		if err := os.WriteFile(path, []byte("token-file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})

	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"the file", env(), nil, "token-file"},
		{"SHIPPY_TOKEN over the file", env("SHIPPY_TOKEN", "token-env"), nil, "token-env"},
		{"--token over both", env("SHIPPY_TOKEN", "token-env"), []string{"--token", "token-u1"}, "token-u1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, sent := get(t, tt.env, tt.args...)
			if sent != tt.want {
				t.Errorf("get sent token %q; want %q", sent, tt.want)
			}
			wantOK(t, tt.args, r)
		})
	}

	t.Run("auth under HOME", func(t *testing.T) {
		home := t.TempDir()
		args := []string{"auth", "--email", "ewan@example.com", "--password", "s3cret-pass"}
		wantOK(t, args, runWith(t, f, runOpts{env: map[string]string{"XDG_CONFIG_HOME": "", "HOME": home}}, args...))
		if b, err := os.ReadFile(filepath.Join(home, ".config", "shippy", "token")); err != nil || string(b) != "token-u1\n" {
			t.Errorf("~/.config/shippy/token = %q, %v; want token-u1", b, err)
		}
	})

	t.Run("auth --no-save writes nothing", func(t *testing.T) {
		dir := t.TempDir()
		args := []string{"auth", "--no-save", "--email", "ewan@example.com", "--password", "s3cret-pass"}
		wantOK(t, args, runWith(t, f, runOpts{env: map[string]string{"XDG_CONFIG_HOME": dir}}, args...))
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("auth --no-save wrote %v; want nothing", entries)
		}
	})

	t.Run("validate checks the saved token", func(t *testing.T) {
		r := runWith(t, f, runOpts{env: env()}, "validate")
		if r.code != exitOK || r.stdout != "valid\n" {
			t.Errorf("validate with the saved token = exit %d, stdout %q, stderr %q; want valid", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("a token file others can read is refused", func(t *testing.T) {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(path, 0o600)
		calls := f.callCount()
		r, _ := get(t, env())
		if r.code != exitUsage || !strings.Contains(r.stderr, "readable by others") || f.callCount() != calls {
			t.Errorf("get with a 0644 token file = exit %d, stderr %q; want exit 2, readable by others, no call", r.code, r.stderr)
		}
	})

	t.Run("logout", func(t *testing.T) {
		r := runWith(t, f, runOpts{env: env()}, "logout")
		if r.code != exitOK || !strings.HasPrefix(r.stdout, "Removed the saved token") {
			t.Errorf("logout = exit %d, stdout %q, stderr %q; want it removed", r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("token file after logout: %v; want it gone", err)
		}
		r = runWith(t, f, runOpts{env: env()}, "logout")
		if r.code != exitOK || !strings.HasPrefix(r.stdout, "No saved token") {
			t.Errorf("second logout = exit %d, stdout %q; want No saved token", r.code, r.stdout)
		}
	})
}

// get and list refused by the service: 401 says how to sign in, 403 says
// what is not allowed; both exit 1 with one line.
func TestReadsRefused(t *testing.T) {
	tests := []struct {
		name  string
		token string
		args  []string
		want  string
	}{
		{"list without a token", "", []string{"list"},
			"shippy-user-cli: list: invalid or expired token (401): sign in with `shippy-user-cli auth --email EMAIL` (it saves the token), or pass --token or SHIPPY_TOKEN" + idSuffix + "\n"},
		{"get with a bad token", "forged", []string{"get", "--id", "u1"},
			"shippy-user-cli: get: invalid or expired token (401): sign in with `shippy-user-cli auth --email EMAIL` (it saves the token), or pass --token or SHIPPY_TOKEN" + idSuffix + "\n"},
		{"list as a non-admin", "token-u1", []string{"list"},
			"shippy-user-cli: list: UserService.GetAll is for admins only (403)" + idSuffix + "\n"},
		{"get another user's", "token-u1", []string{"get", "--id", "u2"},
			"shippy-user-cli: get: you may read only your own user (403)" + idSuffix + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(ewan(), &pb.User{Id: "u2", Name: "Ann", Email: "ann@example.com"})
			f.tokens["token-u1"] = "u1"
			r := runWith(t, f, runOpts{env: map[string]string{"SHIPPY_TOKEN": tt.token}}, tt.args...)
			if r.code != exitRejected || r.stderr != tt.want || r.stdout != "" {
				t.Errorf("run(%q) = exit %d, stderr %q, stdout %q; want exit 1, %q", tt.args, r.code, r.stderr, r.stdout, tt.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // the stderr line must contain this
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown global flag", []string{"--bogus", "list"}, "flag provided but not defined: -bogus"},
		{"unknown command flag", []string{"list", "--bogus"}, "flag provided but not defined: -bogus"},
		{"positional argument", []string{"list", "extra"}, `unexpected argument "extra"`},
		{"bad timeout", []string{"--timeout", "0s", "list"}, "--timeout must be positive"},
		{"create without name", []string{"create", "--email", "e@example.com", "--password", "password1"}, "--name is required"},
		{"create without email", []string{"create", "--name", "N", "--password", "password1"}, "--email is required"},
		{"create without password", []string{"create", "--name", "N", "--email", "e@example.com"}, "a password is required"},
		{"get without id", []string{"get"}, "--id is required"},
		{"auth without email", []string{"auth", "--password", "password1"}, "--email is required"},
		{"auth without password", []string{"auth", "--email", "e@example.com"}, "a password is required"},
		{"validate without token", []string{"validate"}, "no token to check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			r := runCLI(t, f, tt.args...)
			if r.code != exitUsage {
				t.Errorf("run(%q) = exit %d; want %d", tt.args, r.code, exitUsage)
			}
			if !strings.HasPrefix(r.stderr, "shippy-user-cli: ") || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("run(%q) stderr = %q; want one line containing %q", tt.args, r.stderr, tt.want)
			}
			if strings.Contains(r.stderr, "request id") {
				t.Errorf("run(%q) stderr = %q; want no request id: no call was made", tt.args, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("run(%q) stdout = %q; want nothing", tt.args, r.stdout)
			}
			if n := f.callCount(); n != 0 {
				t.Errorf("run(%q) made %d calls; want none on a usage error", tt.args, n)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"create", "--help"}, {"-h"}} {
		r := runCLI(t, newFake(), args...)
		if r.code != exitOK || r.stdout == "" || r.stderr != "" {
			t.Errorf("run(%q) = exit %d, stdout %q, stderr %q; want exit 0 and usage on stdout", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCLI(t, newFake(), "--help"); !strings.Contains(r.stdout, "Exit codes:") || !strings.Contains(r.stdout, "SHIPPY_PASSWORD") {
		t.Errorf("--help does not document exit codes and SHIPPY_PASSWORD:\n%s", r.stdout)
	}
}

func TestErrorMapping(t *testing.T) {
	serverJSON := func(code int32, detail string) error {
		// What the go-micro client returns for a service's error: its JSON text.
		return errors.New(merrors.New(serviceName, detail, code).Error())
	}
	tests := []struct {
		name     string
		err      error
		wantCode int
		want     string
	}{
		{"bad request", merrors.BadRequest(serviceName, "a valid email is required"), exitRejected,
			"shippy-user-cli: list: a valid email is required (400)"},
		{"conflict as text from the wire", serverJSON(409, "email already registered"), exitRejected,
			"shippy-user-cli: list: email already registered (409)"},
		{"internal error", merrors.InternalServerError(serviceName, "internal error"), exitUnavailable,
			"shippy-user-cli: list: user-service failed: internal error (500)"},
		{"not registered", merrors.InternalServerError(clientErrorID, "service go.micro.srv.user: not found"), exitUnavailable,
			"shippy-user-cli: list: go.micro.srv.user is not in the registry: is the user-service running, with the same MICRO_REGISTRY and MICRO_REGISTRY_ADDRESS?"},
		{"connection refused", merrors.InternalServerError(clientErrorID, "connection refused"), exitUnavailable,
			"shippy-user-cli: list: cannot reach go.micro.srv.user: connection refused"},
		{"client timeout", merrors.Timeout(clientErrorID, "context deadline exceeded"), exitUnavailable,
			"shippy-user-cli: list: no answer from go.micro.srv.user: context deadline exceeded"},
		{"multi-line plain error", errors.New("boom\nsecond line"), exitUnavailable,
			"shippy-user-cli: list: boom second line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.err = tt.err
			r := runCLI(t, f, "list")
			if r.code != tt.wantCode || r.stderr != tt.want+idSuffix+"\n" || r.stdout != "" {
				t.Errorf("list with %v = exit %d, stderr %q; want exit %d, %q", tt.err, r.code, r.stderr, tt.wantCode, tt.want)
			}
		})
	}

	t.Run("validate passes service failures through", func(t *testing.T) {
		f := newFake()
		f.err = merrors.InternalServerError(clientErrorID, "connection refused")
		r := runCLI(t, f, "validate", "--token", "t")
		if r.code != exitUnavailable || r.stdout != "" || !strings.Contains(r.stderr, "cannot reach") {
			t.Errorf("validate with unreachable service = exit %d, stdout %q, stderr %q; want exit 3 and a stderr line", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("demo names the failed step", func(t *testing.T) {
		f := newFake()
		f.err = merrors.Conflict(serviceName, "email already registered")
		r := runCLI(t, f, "demo")
		want := "shippy-user-cli: demo: create sample user: email already registered (409)" + idSuffix + "\n"
		if r.code != exitRejected || r.stderr != want {
			t.Errorf("demo = exit %d, stderr %q; want exit 1, %q", r.code, r.stderr, want)
		}
	})

	t.Run("bad go-micro configuration", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		a := &app{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" },
			connect: func() (pb.UserService, error) {
				return nil, errors.New(`MICRO_REGISTRY="bogus" is not a known go-micro plugin`)
			}}
		code := a.run(context.Background(), []string{"list"})
		if code != exitUsage || !strings.Contains(stderr.String(), "MICRO_REGISTRY") {
			t.Errorf("list with bad MICRO_REGISTRY = exit %d, stderr %q; want exit 2 naming the variable", code, stderr.String())
		}
	})
}

func TestTimeoutBoundsACallThatNeverAnswers(t *testing.T) {
	f := newFake()
	f.hang = make(chan struct{})
	t.Cleanup(func() { close(f.hang) })
	r := runCLI(t, f, "--timeout", "50ms", "list")
	want := "shippy-user-cli: list: no answer from go.micro.srv.user within 50ms (--timeout)" + idSuffix + "\n"
	if r.code != exitUnavailable || r.stderr != want {
		t.Errorf("list against a hung service = exit %d, stderr %q; want exit 3, %q", r.code, r.stderr, want)
	}
}
