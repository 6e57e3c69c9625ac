package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"go-micro.dev/v6/client"
	"go-micro.dev/v6/metadata"

	"github.com/shippy/shippy/internal/requestid"
	pb "github.com/shippy/shippy/proto/user"
)

// idRecorder is a UserService recording the X-Request-Id each call sends.
type idRecorder struct {
	next pb.UserService
	mu   sync.Mutex
	ids  []string
}

func (r *idRecorder) record(ctx context.Context) {
	md, _ := metadata.FromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, md[requestid.Header])
}

func (r *idRecorder) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ids
	r.ids = nil
	return out
}

func (r *idRecorder) Create(ctx context.Context, in *pb.User, opts ...client.CallOption) (*pb.Response, error) {
	r.record(ctx)
	return r.next.Create(ctx, in, opts...)
}

func (r *idRecorder) Get(ctx context.Context, in *pb.User, opts ...client.CallOption) (*pb.Response, error) {
	r.record(ctx)
	return r.next.Get(ctx, in, opts...)
}

func (r *idRecorder) GetAll(ctx context.Context, in *pb.Request, opts ...client.CallOption) (*pb.Response, error) {
	r.record(ctx)
	return r.next.GetAll(ctx, in, opts...)
}

func (r *idRecorder) Auth(ctx context.Context, in *pb.User, opts ...client.CallOption) (*pb.Token, error) {
	r.record(ctx)
	return r.next.Auth(ctx, in, opts...)
}

func (r *idRecorder) ValidateToken(ctx context.Context, in *pb.Token, opts ...client.CallOption) (*pb.Token, error) {
	r.record(ctx)
	return r.next.ValidateToken(ctx, in, opts...)
}

// runReal runs the CLI against svc with the real id generator.
func runReal(t *testing.T, svc pb.UserService, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"XDG_CONFIG_HOME": t.TempDir()}
	a := &app{
		stdout:  &stdout,
		stderr:  &stderr,
		getenv:  func(k string) string { return env[k] },
		connect: func() (pb.UserService, error) { return svc, nil },
		prompt:  func(string) (string, bool, error) { return "", false, nil },
	}
	code := a.run(context.Background(), args)
	return result{code, stdout.String(), stderr.String()}
}

// One id per command, sent with each of its calls; the next command makes
// another.
func TestRequestIDPerCommand(t *testing.T) {
	rec := &idRecorder{next: newFake()}
	admin := rec.next.(*fakeUsers).admin()
	wantOK(t, []string{"demo"}, runReal(t, rec, "demo", "--token", admin))
	first := rec.sent()
	if len(first) != 3 { // Create, GetAll, Auth
		t.Fatalf("demo made calls with ids %q; want 3 calls", first)
	}
	for _, id := range first {
		if id != first[0] || len(id) != 16 || !requestid.Valid(id) {
			t.Errorf("demo's calls sent ids %q; want one new 16-character id for all", first)
			break
		}
	}
	wantOK(t, []string{"demo"}, runReal(t, rec, "demo", "--token", admin))
	if second := rec.sent(); len(second) == 0 || second[0] == first[0] {
		t.Errorf("a second demo sent ids %q; want another than %q", second, first[0])
	}
}

func TestRequestIDFlag(t *testing.T) {
	const id = "ops-ticket-42"
	t.Run("sent, and named by the error", func(t *testing.T) {
		rec := &idRecorder{next: newFake()}
		r := runReal(t, rec, "--request-id", id, "auth", "--email", "nobody@example.com", "--password", "wrong-pass")
		want := "shippy-user-cli: auth: invalid email or password (401); request id: " + id + "\n"
		if r.code != exitRejected || r.stderr != want {
			t.Errorf("auth = exit %d, stderr %q; want exit 1, %q", r.code, r.stderr, want)
		}
		if sent := rec.sent(); len(sent) != 1 || sent[0] != id {
			t.Errorf("auth sent ids %q; want [%s]", sent, id)
		}
	})

	t.Run("after the command too", func(t *testing.T) {
		rec := &idRecorder{next: ewanSignedIn()}
		wantOK(t, nil, runReal(t, rec, "get", "--id", "u1", "--token", "token-u1", "--request-id", id))
		if sent := rec.sent(); len(sent) != 1 || sent[0] != id {
			t.Errorf("get sent ids %q; want [%s]", sent, id)
		}
	})

	for _, bad := range []string{strings.Repeat("a", requestid.MaxLen+1), "two words", "a\nb", "caf\u00e9"} {
		t.Run("refused: "+bad, func(t *testing.T) {
			rec := &idRecorder{next: newFake()}
			r := runReal(t, rec, "--request-id", bad, "list")
			if r.code != exitUsage || !strings.Contains(r.stderr, "--request-id must be") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("--request-id %q = exit %d, stderr %q; want exit 2 and one line on --request-id", bad, r.code, r.stderr)
			}
			if sent := rec.sent(); len(sent) != 0 {
				t.Errorf("--request-id %q: calls made with %q; want none", bad, sent)
			}
		})
	}
}

// --verbose prints the id once, before the first call, on stderr; stdout
// stays the command's answer.
func TestVerbosePrintsTheRequestID(t *testing.T) {
	rec := &idRecorder{next: newFake(ewan())}
	r := runReal(t, rec, "--verbose", "auth", "--email", "ewan@example.com", "--password", "s3cret-pass", "--no-save")
	sent := rec.sent()
	if len(sent) != 1 {
		t.Fatalf("auth made calls with ids %q; want 1", sent)
	}
	if want := "shippy-user-cli: request id: " + sent[0] + "\n"; r.code != exitOK || r.stderr != want || r.stdout != "token-u1\n" {
		t.Errorf("auth --verbose = exit %d, stdout %q, stderr %q; want exit 0, the token, %q", r.code, r.stdout, r.stderr, want)
	}
}
