package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// fakeStore is an in-memory userStore with the database's unique email rule;
// it keeps each user's event with it, as the outbox does.
type fakeStore struct {
	mu     sync.Mutex
	users  []User
	events []*pb.UserCreated
	err    error // returned by every method when set
}

func (s *fakeStore) Create(_ context.Context, u *User, ev *pb.UserCreated) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	for _, x := range s.users {
		if x.Email == u.Email {
			return fmt.Errorf("create user: %w", errEmailTaken)
		}
	}
	s.users = append(s.users, *u)
	s.events = append(s.events, proto.Clone(ev).(*pb.UserCreated))
	return nil
}

func (s *fakeStore) Get(_ context.Context, id string) (*User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	for _, x := range s.users {
		if x.ID == id {
			return &x, nil
		}
	}
	return nil, errUserNotFound
}

func (s *fakeStore) GetByEmail(_ context.Context, email string) (*User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	for _, x := range s.users {
		if x.Email == normalizeEmail(email) {
			return &x, nil
		}
	}
	return nil, errUserNotFound
}

func (s *fakeStore) List(context.Context) ([]User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return append([]User(nil), s.users...), nil
}

// countingHasher is bcrypt at its lowest cost, counting the work done.
type countingHasher struct {
	hashes, compares atomic.Int64
}

func (h *countingHasher) Hash(p []byte) ([]byte, error) {
	h.hashes.Add(1)
	return bcrypt.GenerateFromPassword(p, bcrypt.MinCost)
}

func (h *countingHasher) Compare(hash, p []byte) error {
	h.compares.Add(1)
	return bcrypt.CompareHashAndPassword(hash, p)
}

// countingNotifier counts the relay wake-ups the handler asks for.
type countingNotifier struct{ n atomic.Int64 }

func (c *countingNotifier) Notify() { c.n.Add(1) }

// noThrottle lets every login attempt through (fuzzing, benchmarks).
type noThrottle struct{}

func (noThrottle) Begin(context.Context, string, string) (time.Duration, error) { return 0, nil }
func (noThrottle) Succeeded(context.Context, string, string) error              { return nil }

// testThrottle is the default throttle: back-off after 5 failures per email
// and caller or 50 per caller, from 1s up to 15m; failures kept for 1h.
var testThrottle = throttleConfig{perEmail: 5, perCaller: 50, base: time.Second, max: 15 * time.Minute, window: time.Hour}

// fakeClock is a settable clock for the limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type testHandler struct {
	*handler
	store  *fakeStore
	hasher *countingHasher
	notify *countingNotifier
	clock  *fakeClock
	logs   *logbuf.Buffer
}

const testSecret = "0123456789abcdef0123456789abcdef-test"

// testAdmin is the email ADMIN_EMAILS names in tests.
const testAdmin = "admin@example.com"

// as returns a context whose caller, as tokenauth's wrapper verified it,
// is the user with id (an admin when admin is true).
func as(id string, admin bool) context.Context {
	return tokenauth.NewContext(context.Background(), tokenauth.Claims{Subject: id, Admin: admin})
}

// from returns a context whose request came from remote (ip:port), as
// go-micro's server records it.
func from(remote string) context.Context {
	return metadata.NewContext(context.Background(), metadata.Metadata{"Remote": remote})
}

func newTestHandler(t testing.TB) *testHandler {
	t.Helper()
	th := &testHandler{
		store:  &fakeStore{},
		hasher: &countingHasher{},
		notify: &countingNotifier{},
		clock:  &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		logs:   &logbuf.Buffer{},
	}
	log := slog.New(slog.NewJSONHandler(th.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The throttle's table lives in the users' database; here an SQLite
	// file of the test's own.
	db := openTestStore(t, Config{Driver: driverSQLite, DSN: filepath.Join(t.TempDir(), "throttle.db")}).db
	h, err := newHandler(th.store, th.hasher, newTokenService([]byte(testSecret), time.Hour, testAdmin), th.notify,
		newAuthLimiter(db, testThrottle, th.clock.Now), log)
	if err != nil {
		t.Fatalf("newHandler: %v", err)
	}
	th.handler = h
	// Only count the work requests cause, not the dummy hash.
	th.hasher.hashes.Store(0)
	return th
}

func (th *testHandler) create(t *testing.T, name, email, password string) *pb.Response {
	t.Helper()
	res := &pb.Response{}
	if err := th.Create(context.Background(), &pb.User{Name: name, Company: "Acme", Email: email, Password: password}, res); err != nil {
		t.Fatalf("Create(%q) = %v; want nil", email, err)
	}
	return res
}

func code(err error) int32 {
	if err == nil {
		return 0
	}
	var me *merrors.Error
	if errors.As(err, &me) {
		return me.Code
	}
	return -1
}

var hashPattern = regexp.MustCompile(`\$2[aby]\$`)

func TestCreateValidation(t *testing.T) {
	valid := pb.User{Name: "Ada", Company: "Acme", Email: "ada@example.com", Password: "password"}
	with := func(f func(u *pb.User)) *pb.User {
		u := proto.Clone(&valid).(*pb.User)
		f(u)
		return u
	}
	tests := []struct {
		name     string
		req      *pb.User
		wantCode int32
	}{
		{"valid", with(func(*pb.User) {}), 0},
		{"password 7 bytes", with(func(u *pb.User) { u.Password = strings.Repeat("p", 7) }), 400},
		{"password 8 bytes", with(func(u *pb.User) { u.Password = strings.Repeat("p", 8) }), 0},
		{"password 72 bytes", with(func(u *pb.User) { u.Password = strings.Repeat("p", 72) }), 0},
		{"password 73 bytes", with(func(u *pb.User) { u.Password = strings.Repeat("p", 73) }), 400},
		{"password 72 bytes multibyte", with(func(u *pb.User) { u.Password = strings.Repeat("é", 36) }), 0},
		{"password 74 bytes multibyte", with(func(u *pb.User) { u.Password = strings.Repeat("é", 37) }), 400},
		{"password huge", with(func(u *pb.User) { u.Password = strings.Repeat("p", 1<<20) }), 400},
		{"name missing", with(func(u *pb.User) { u.Name = "" }), 400},
		{"name blank", with(func(u *pb.User) { u.Name = "   " }), 400},
		{"name 100 chars", with(func(u *pb.User) { u.Name = strings.Repeat("n", 100) }), 0},
		{"name 100 multibyte chars", with(func(u *pb.User) { u.Name = strings.Repeat("ü", 100) }), 0},
		{"name 101 chars", with(func(u *pb.User) { u.Name = strings.Repeat("n", 101) }), 400},
		{"name huge", with(func(u *pb.User) { u.Name = strings.Repeat("n", 1<<20) }), 400},
		{"name newline", with(func(u *pb.User) { u.Name = "Ada\nLovelace" }), 400},
		{"name NUL", with(func(u *pb.User) { u.Name = "Ada\x00" }), 400},
		{"name escape", with(func(u *pb.User) { u.Name = "Ada\x1b[31m" }), 400},
		{"name DEL", with(func(u *pb.User) { u.Name = "Ada\x7f" }), 400},
		{"name C1 control", with(func(u *pb.User) { u.Name = "Ada\u0085" }), 400},
		{"name invalid UTF-8", with(func(u *pb.User) { u.Name = "Ada\xff" }), 400},
		{"company empty", with(func(u *pb.User) { u.Company = "" }), 0},
		{"company 100 chars", with(func(u *pb.User) { u.Company = strings.Repeat("c", 100) }), 0},
		{"company 101 chars", with(func(u *pb.User) { u.Company = strings.Repeat("c", 101) }), 400},
		{"company tab", with(func(u *pb.User) { u.Company = "Ac\tme" }), 400},
		{"email missing", with(func(u *pb.User) { u.Email = "" }), 400},
		{"email no at", with(func(u *pb.User) { u.Email = "ada.example.com" }), 400},
		{"email display name", with(func(u *pb.User) { u.Email = "Ada <ada@example.com>" }), 400},
		{"email two addresses", with(func(u *pb.User) { u.Email = "ada@example.com, bob@example.com" }), 400},
		{"email newline", with(func(u *pb.User) { u.Email = "ada@example.com\nBcc: x@y.z" }), 400},
		{"email 254 bytes", with(func(u *pb.User) { u.Email = strings.Repeat("a", 64) + "@" + strings.Repeat("b", 185) + ".com" }), 0},
		{"email 255 bytes", with(func(u *pb.User) { u.Email = strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + ".com" }), 400},
		{"email surrounding spaces", with(func(u *pb.User) { u.Email = "  ada@example.com " }), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := newTestHandler(t)
			err := th.Create(context.Background(), tt.req, &pb.Response{})
			if got := code(err); got != tt.wantCode {
				t.Fatalf("Create(%q) = %v (code %d); want code %d", tt.name, err, got, tt.wantCode)
			}
			if tt.wantCode != 0 {
				if n := th.hasher.hashes.Load(); n != 0 {
					t.Errorf("Create(%q) hashed %d times; want no bcrypt work for an invalid request", tt.name, n)
				}
				if len(th.store.users) != 0 {
					t.Errorf("Create(%q) stored %d users; want none", tt.name, len(th.store.users))
				}
			}
		})
	}
}

func TestCreateReturnsUserWithoutPasswordAndEnqueuesEvent(t *testing.T) {
	th := newTestHandler(t)
	const name = "'); DROP TABLE users;--"
	res := th.create(t, name, "  Ada@Example.COM ", "correct horse")

	if res.User.GetId() == "" || res.User.Name != name || res.User.Email != "ada@example.com" || res.User.Company != "Acme" {
		t.Errorf("Create user = %v; want id set, name verbatim, email lower-cased and trimmed", res.User)
	}
	if res.User.Password != "" {
		t.Errorf("Create returned password %q; want empty", res.User.Password)
	}
	if !res.Token.GetValid() || res.Token.GetToken() == "" {
		t.Errorf("Create token = %v; want a valid token", res.Token)
	}
	claims, err := th.tokens.Decode(res.Token.Token)
	if err != nil || claims.Subject != res.User.Id {
		t.Errorf("Create token decodes to %v, %v; want subject %s", claims, err, res.User.Id)
	}
	if len(th.store.events) != 1 {
		t.Fatalf("Create stored %d events; want 1", len(th.store.events))
	}
	if n := th.notify.n.Load(); n != 1 {
		t.Errorf("Create notified the relay %d times; want 1", n)
	}
	ev := th.store.events[0]
	if ev.EventId == "" || ev.Id != res.User.Id || ev.Name != name || ev.Email != "ada@example.com" || ev.Company != "Acme" || ev.CreatedAtUnixMs == 0 {
		t.Errorf("event = %v; want ids, name, company, email and time of the new user", ev)
	}
	if !strings.Contains(th.logs.String(), ev.EventId) || !strings.Contains(th.logs.String(), ev.Id) {
		t.Errorf("logs do not name event_id %s and user_id %s:\n%s", ev.EventId, ev.Id, th.logs)
	}
	// The stored row keeps the name verbatim and holds a hash, not the password.
	stored := th.store.users[0]
	if stored.Name != name || stored.PasswordHash == "correct horse" || !hashPattern.MatchString(stored.PasswordHash) {
		t.Errorf("stored user name %q hash %q; want verbatim name and a bcrypt hash", stored.Name, stored.PasswordHash)
	}
}

func TestCreateDuplicateEmailConflict(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Ada", "ada@example.com", "password1")
	err := th.Create(context.Background(), &pb.User{Name: "Imposter", Email: "ADA@example.COM", Password: "password2"}, &pb.Response{})
	if code(err) != 409 {
		t.Fatalf("Create(duplicate in other case) = %v; want 409 Conflict", err)
	}
	if len(th.store.events) != 1 || th.notify.n.Load() != 1 {
		t.Errorf("stored %d events, notified %d times; want 1 and 1 (nothing for the refused duplicate)",
			len(th.store.events), th.notify.n.Load())
	}
}

// A store that cannot commit the user and its event fails Create with a 500
// and wakes no relay.
func TestCreateStoreFailureEnqueuesNothing(t *testing.T) {
	th := newTestHandler(t)
	th.store.err = errors.New("outbox: enqueue event: relation \"outbox_events\" does not exist")
	err := th.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: "password1"}, &pb.Response{})
	if code(err) != 500 || strings.Contains(err.Error(), "outbox") {
		t.Errorf("Create with a failing store = %v; want 500 without internals", err)
	}
	if n := th.notify.n.Load(); n != 0 || len(th.store.events) != 0 {
		t.Errorf("notified %d times, stored %d events; want 0 and 0", n, len(th.store.events))
	}
}

func TestStoreErrorsAreHidden(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Ada", "ada@example.com", "password1")
	th.store.err = errors.New(`pq: relation "users" does not exist SELECT * FROM users`)
	calls := map[string]error{
		"Create": th.Create(context.Background(), &pb.User{Name: "B", Email: "b@example.com", Password: "password1"}, &pb.Response{}),
		"Get":    th.Get(as(th.store.users[0].ID, false), &pb.User{Id: th.store.users[0].ID}, &pb.Response{}),
		"GetAll": th.GetAll(as("admin", true), &pb.Request{}, &pb.Response{}),
		"Auth":   th.Auth(context.Background(), &pb.User{Email: "ada@example.com", Password: "password1"}, &pb.Token{}),
	}
	for name, err := range calls {
		if code(err) != 500 || strings.Contains(err.Error(), "SELECT") || strings.Contains(err.Error(), "relation") {
			t.Errorf("%s with a failing store = %v; want 500 without SQL", name, err)
		}
	}
}

func TestGet(t *testing.T) {
	th := newTestHandler(t)
	ada := th.create(t, "Ada", "ada@example.com", "password1").User.Id
	bob := th.create(t, "Bob", "bob@example.com", "password2").User.Id
	const unknown = "00000000-0000-4000-8000-000000000000"
	tests := []struct {
		name     string
		ctx      context.Context
		id       string
		wantCode int32
	}{
		{"own user", as(ada, false), ada, 0},
		{"another user's", as(ada, false), bob, 403},
		{"unknown id, not admin", as(ada, false), unknown, 403}, // not 404: no probing for ids
		{"admin, another user's", as("some-admin", true), bob, 0},
		{"admin, unknown id", as("some-admin", true), unknown, 404},
		{"admin, not a uuid", as("some-admin", true), "'; DROP TABLE users;--", 400},
		{"empty id", as(ada, false), "", 400},
		{"no verified caller", context.Background(), ada, 401}, // without tokenauth's wrapper
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &pb.Response{}
			err := th.Get(tt.ctx, &pb.User{Id: tt.id}, res)
			if code(err) != tt.wantCode {
				t.Fatalf("Get(%q) = %v; want code %d", tt.id, err, tt.wantCode)
			}
			if tt.wantCode == 0 && (res.User.Id != tt.id || res.User.Password != "") {
				t.Errorf("Get(%q) = %v; want the user without password", tt.id, res.User)
			}
			if tt.wantCode != 0 && res.User != nil {
				t.Errorf("Get(%q) refused but answered %v", tt.id, res.User)
			}
		})
	}
}

func TestGetAll(t *testing.T) {
	th := newTestHandler(t)
	ada := th.create(t, "Ada", "ada@example.com", "password1").User.Id
	th.create(t, "Bob", "bob@example.com", "password2")
	res := &pb.Response{}
	if err := th.GetAll(as("some-admin", true), &pb.Request{}, res); err != nil {
		t.Fatalf("GetAll(admin) = %v; want nil", err)
	}
	if len(res.Users) != 2 || res.Users[0].Email != "ada@example.com" || res.Users[1].Email != "bob@example.com" {
		t.Errorf("GetAll(admin) users = %v; want ada and bob", res.Users)
	}
	for name, ctx := range map[string]context.Context{"not admin": as(ada, false), "no verified caller": context.Background()} {
		res := &pb.Response{}
		err := th.GetAll(ctx, &pb.Request{}, res)
		if want := map[string]int32{"not admin": 403, "no verified caller": 401}[name]; code(err) != want || len(res.Users) != 0 {
			t.Errorf("GetAll(%s) = %d users, %v; want none and code %d", name, len(res.Users), err, want)
		}
	}
}

// The admin claim comes from ADMIN_EMAILS at signing time, in any case,
// and counts only while the email is still listed.
func TestAdminClaim(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Root", "Admin@Example.com", "password1")
	th.create(t, "Ada", "ada@example.com", "password1")
	tok := func(email string) string {
		res := &pb.Token{}
		if err := th.Auth(context.Background(), &pb.User{Email: email, Password: "password1"}, res); err != nil {
			t.Fatalf("Auth(%q) = %v", email, err)
		}
		return res.Token
	}
	admin, user := tok("admin@example.com"), tok("ada@example.com")
	if c, err := th.tokens.Verify(admin); err != nil || !c.Admin || c.Email != "admin@example.com" {
		t.Errorf("Verify(admin's token) = %+v, %v; want admin", c, err)
	}
	if c, err := th.tokens.Verify(user); err != nil || c.Admin {
		t.Errorf("Verify(Ada's token) = %+v, %v; want not admin", c, err)
	}
	// The same tokens after a restart without ADMIN_EMAILS: not admin.
	restarted := newTokenService([]byte(testSecret), time.Hour)
	if c, err := restarted.Verify(admin); err != nil || c.Admin {
		t.Errorf("Verify(admin's token) once ADMIN_EMAILS no longer names it = %+v, %v; want valid, not admin", c, err)
	}
	// A token signed before Ada was listed stays a non-admin one.
	listed := newTokenService([]byte(testSecret), time.Hour, "ada@example.com")
	if c, err := listed.Verify(user); err != nil || c.Admin {
		t.Errorf("Verify(Ada's earlier token) once ADMIN_EMAILS names her = %+v, %v; want not admin until she signs in again", c, err)
	}
}

func TestAuth(t *testing.T) {
	th := newTestHandler(t)
	created := th.create(t, "Ada", "ada@example.com", "correct horse")

	res := &pb.Token{}
	if err := th.Auth(context.Background(), &pb.User{Email: " ADA@example.com", Password: "correct horse"}, res); err != nil {
		t.Fatalf("Auth(right password) = %v; want nil", err)
	}
	claims, err := th.tokens.Decode(res.Token)
	if err != nil || claims.Subject != created.User.Id || claims.Email != "ada@example.com" || claims.Name != "Ada" {
		t.Errorf("Auth token claims = %+v, %v; want subject, name and email of Ada", claims, err)
	}
	if err := th.ValidateToken(context.Background(), &pb.Token{Token: res.Token}, &pb.Token{}); err != nil {
		t.Errorf("ValidateToken(Auth's token) = %v; want nil", err)
	}
}

// Unknown email and wrong password must be indistinguishable: same error,
// same code, one bcrypt comparison each.
func TestAuthFailuresLookTheSame(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Ada", "ada@example.com", "correct horse")

	var errs []error
	for _, req := range []*pb.User{
		{Email: "nobody@example.com", Password: "correct horse"},
		{Email: "ada@example.com", Password: "wrong horse"},
	} {
		before := th.hasher.compares.Load()
		err := th.Auth(context.Background(), req, &pb.Token{})
		if n := th.hasher.compares.Load() - before; n != 1 {
			t.Errorf("Auth(%q) did %d bcrypt comparisons; want 1", req.Email, n)
		}
		if code(err) != 401 {
			t.Errorf("Auth(%q) = %v; want 401", req.Email, err)
		}
		errs = append(errs, err)
	}
	if errs[0].Error() != errs[1].Error() {
		t.Errorf("Auth errors differ:\n unknown email:  %v\n wrong password: %v\nwant identical", errs[0], errs[1])
	}
}

func TestAuthRejectsOversizedInputWithoutWork(t *testing.T) {
	th := newTestHandler(t)
	for _, req := range []*pb.User{
		{Email: "", Password: "password1"},
		{Email: "ada@example.com", Password: ""},
		{Email: "ada@example.com", Password: strings.Repeat("p", 1<<20)},
		{Email: strings.Repeat("a", 1<<20) + "@example.com", Password: "password1"},
		// No account can have these (Create refuses them); PostgreSQL would
		// refuse a NUL or invalid UTF-8 with an error.
		{Email: "ada@example.com\x00", Password: "password1"},
		{Email: "\xffada@example.com", Password: "password1"},
		{Email: "ada@example.com\nBcc: x@y.z", Password: "password1"},
	} {
		err := th.Auth(context.Background(), req, &pb.Token{})
		if code(err) != 401 || err.Error() != errBadCredentials().Error() {
			t.Errorf("Auth(len email %d, len password %d) = %v; want the usual 401", len(req.Email), len(req.Password), err)
		}
	}
	if n := th.hasher.compares.Load(); n != 0 {
		t.Errorf("bcrypt comparisons = %d; want 0", n)
	}
}

// An attacker's failures slow the attacker, not the owner: the owner logs
// in from another address while the attacker waits, and with the right
// password even from the attacker's address once the wait is over.
func TestAuthThrottle(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Ada", "ada@example.com", "correct horse")
	attacker, owner := from("203.0.113.7:40000"), from("198.51.100.2:51000")
	auth := func(ctx context.Context, email, password string) error {
		return th.Auth(ctx, &pb.User{Email: email, Password: password}, &pb.Token{})
	}

	for i := 1; i <= 5; i++ {
		if err := auth(attacker, "ada@example.com", "wrong"+fmt.Sprint(i)); code(err) != 401 {
			t.Fatalf("failure %d: Auth = %v; want 401", i, err)
		}
	}
	compares := th.hasher.compares.Load()
	// Refused even with the right password, in any case, without bcrypt work.
	for _, email := range []string{"ada@example.com", "ADA@example.com"} {
		err := auth(attacker, email, "correct horse")
		if code(err) != 429 || !strings.Contains(err.Error(), "too many failed attempts: try again in 1s") {
			t.Fatalf("Auth(%q) from the attacker after 5 failures = %v; want 429, try again in 1s", email, err)
		}
	}
	if n := th.hasher.compares.Load() - compares; n != 0 {
		t.Errorf("refused attempts did %d bcrypt comparisons; want 0", n)
	}
	// The owner, elsewhere, is not slowed.
	if err := auth(owner, "ada@example.com", "correct horse"); err != nil {
		t.Fatalf("Auth from the owner's address during the attack = %v; want nil", err)
	}
	// The waits double: 1s, 2s, 4s.
	for _, wait := range []int{1, 2, 4} {
		th.clock.Advance(time.Duration(wait) * time.Second)
		if err := auth(attacker, "ada@example.com", "wrong"); code(err) != 401 {
			t.Fatalf("Auth after waiting %ds = %v; want 401 (let through)", wait, err)
		}
		err := auth(attacker, "ada@example.com", "wrong")
		if want := fmt.Sprintf("try again in %ds", 2*wait); code(err) != 429 || !strings.Contains(err.Error(), want) {
			t.Fatalf("Auth right after = %v; want 429 %s", err, want)
		}
	}
	// Once the wait is over, the right password works from the attacker's
	// address too, and clears its count: five more failures before a wait.
	th.clock.Advance(8 * time.Second)
	if err := auth(attacker, "ada@example.com", "correct horse"); err != nil {
		t.Fatalf("Auth with the right password after the wait = %v; want nil", err)
	}
	for i := 1; i <= 5; i++ {
		if err := auth(attacker, "ada@example.com", "wrong"); code(err) != 401 {
			t.Fatalf("failure %d after the success: Auth = %v; want 401", i, err)
		}
	}
	if err := auth(attacker, "ada@example.com", "wrong"); code(err) != 429 {
		t.Errorf("Auth after 5 more failures = %v; want 429", err)
	}
}

// One address guessing over many emails is slowed after
// AUTH_CALLER_MAX_FAILURES (50) failures in all, on every email.
func TestAuthThrottlePerCaller(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Ada", "ada@example.com", "correct horse")
	sprayer := from("203.0.113.7:40000")
	for i := 1; i <= 50; i++ {
		err := th.Auth(sprayer, &pb.User{Email: fmt.Sprintf("user%d@example.com", i), Password: "Summer2026!"}, &pb.Token{})
		if code(err) != 401 {
			t.Fatalf("guess %d on a fresh email = %v; want 401", i, err)
		}
	}
	err := th.Auth(sprayer, &pb.User{Email: "ada@example.com", Password: "correct horse"}, &pb.Token{})
	if code(err) != 429 {
		t.Errorf("Auth from the sprayer after 50 failures = %v; want 429 on any email", err)
	}
	if err := th.Auth(from("198.51.100.2:51000"), &pb.User{Email: "ada@example.com", Password: "correct horse"}, &pb.Token{}); err != nil {
		t.Errorf("Auth from another address = %v; want nil", err)
	}
}

func TestCallerOf(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"127.0.0.1:5000", "127.0.0.1"},
		{"[::ffff:10.0.0.1]:5000", "10.0.0.1"},
		{"[2001:db8:1:2:aaaa::1]:5000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::7]:6000", "2001:db8:1:2::/64"},
		{"[fe80::1%lo]:5000", "fe80::/64"},
		{"_INBOX.s3LyNBM6fP8h9nR2kT", "unknown"}, // the NATS transport's reply subject
		{"", "unknown"},
		{"host.example:5000", "unknown"},
	}
	for _, tt := range tests {
		if got := callerOf(from(tt.remote)); got != tt.want {
			t.Errorf("callerOf(Remote %q) = %q; want %q", tt.remote, got, tt.want)
		}
	}
	if got := callerOf(context.Background()); got != "unknown" {
		t.Errorf("callerOf(no metadata) = %q; want unknown", got)
	}
}

func TestValidateTokenRejects(t *testing.T) {
	th := newTestHandler(t)
	for _, tok := range []string{"", "garbage", "a.b.c"} {
		res := &pb.Token{Valid: true}
		err := th.ValidateToken(context.Background(), &pb.Token{Token: tok}, res)
		if code(err) != 401 || res.Valid {
			t.Errorf("ValidateToken(%q) = valid %v, %v; want valid false and 401", tok, res.Valid, err)
		}
	}
}

// No response, event or log line carries the password or a bcrypt hash.
func TestNoSecretsLeave(t *testing.T) {
	th := newTestHandler(t)
	const password = "s3cret-pa55word"
	ctx := context.Background()
	var out []proto.Message

	created := &pb.Response{}
	if err := th.Create(ctx, &pb.User{Name: "Ada", Email: "ada@example.com", Password: password}, created); err != nil {
		t.Fatalf("Create = %v", err)
	}
	got, all, tok, valid := &pb.Response{}, &pb.Response{}, &pb.Token{}, &pb.Token{}
	if err := th.Get(as(created.User.Id, false), &pb.User{Id: created.User.Id}, got); err != nil {
		t.Fatalf("Get = %v", err)
	}
	if err := th.GetAll(as("admin", true), &pb.Request{}, all); err != nil {
		t.Fatalf("GetAll = %v", err)
	}
	_ = th.Auth(ctx, &pb.User{Email: "ada@example.com", Password: password}, tok)
	_ = th.Auth(ctx, &pb.User{Email: "ada@example.com", Password: password + "x"}, &pb.Token{})
	_ = th.ValidateToken(ctx, &pb.Token{Token: tok.Token}, valid)
	out = append(out, created, got, all, tok, valid)
	for _, ev := range th.store.events {
		out = append(out, ev)
	}

	var texts []string
	for _, m := range out {
		b, _ := protojson.Marshal(m)
		texts = append(texts, string(b))
	}
	texts = append(texts, th.logs.String(), decodeJWTPayload(t, tok.Token), decodeJWTPayload(t, created.Token.Token))
	for _, s := range texts {
		if strings.Contains(s, password) || hashPattern.MatchString(s) {
			t.Errorf("found the password or a bcrypt hash in: %s", s)
		}
	}
}

// Parallel wrong guesses must not all pass the limiter while the first
// ones are still in bcrypt: each allowed attempt counts at once.
func TestAuthLimiterHoldsUnderParallelAttempts(t *testing.T) {
	th := newTestHandler(t)
	th.create(t, "Ada", "ada@example.com", "correct horse")
	const max, callers = 5, 20
	compares := th.hasher.compares.Load()

	start := make(chan struct{})
	codes := make(chan int32, callers)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes <- code(th.Auth(context.Background(), &pb.User{Email: "ada@example.com", Password: "wrong guess"}, &pb.Token{}))
		}()
	}
	close(start)
	wg.Wait()
	close(codes)

	got := map[int32]int{}
	for c := range codes {
		got[c]++
	}
	if got[401] != max || got[429] != callers-max || len(got) != 2 {
		t.Errorf("%d parallel wrong-password Auth calls answered %v; want %d x 401 and %d x 429", callers, got, max, callers-max)
	}
	if n := th.hasher.compares.Load() - compares; n > max {
		t.Errorf("%d parallel wrong-password Auth calls did %d bcrypt comparisons; want at most %d", callers, n, max)
	}
}
