package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// Every endpoint of the generated handler has a rule: a new one must be
// given one, or tokenauth refuses it.
func TestAccessPolicyCoversEveryEndpoint(t *testing.T) {
	handler := reflect.TypeFor[pb.UserServiceHandler]()
	for i := range handler.NumMethod() {
		endpoint := "UserService." + handler.Method(i).Name
		if _, ok := accessPolicy[endpoint]; !ok {
			t.Errorf("accessPolicy has no rule for %s", endpoint)
		}
	}
	if len(accessPolicy) != handler.NumMethod() {
		t.Errorf("accessPolicy has %d rules for %d endpoints", len(accessPolicy), handler.NumMethod())
	}
}

// Reads through the real server and client: each refused with the right
// code, the same 401 detail whatever is wrong with the token, and the
// admin's and the owner's paths working.
func TestReadsNeedAToken(t *testing.T) {
	cfg := testCfg(codecProto)
	store := openTestStore(t, Config{Driver: driverSQLite, DSN: filepath.Join(t.TempDir(), "users.db")})
	reg := registry.NewMemoryRegistry()
	p := microenv.Plugins{Broker: broker.NewMemoryBroker(), Registry: reg, Transport: transport.NewHTTPTransport()}
	svc, err := newService(cfg, store, discardLog, p)
	if err != nil {
		t.Fatal(err)
	}
	serveInBackground(t, svc)
	waitNodes(t, reg, 1)
	users := newUserClientOn(reg)
	ctx := context.Background()

	// Open endpoints need no token.
	ada, err := users.Create(ctx, &pb.User{Name: "Ada", Email: "ada@example.com", Password: "password1"})
	if err != nil {
		t.Fatalf("Create without a token = %v; want nil", err)
	}
	if _, err := users.Create(ctx, &pb.User{Name: "Bob", Email: "bob@example.com", Password: "password2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := users.Create(ctx, &pb.User{Name: "Root", Email: testAdmin, Password: "password3"}); err != nil {
		t.Fatal(err)
	}
	adaTok, err := users.Auth(ctx, &pb.User{Email: "ada@example.com", Password: "password1"})
	if err != nil {
		t.Fatalf("Auth without a token = %v; want nil", err)
	}
	rootTok, err := users.Auth(ctx, &pb.User{Email: testAdmin, Password: "password3"})
	if err != nil {
		t.Fatalf("Auth(admin) = %v", err)
	}
	if _, err := users.ValidateToken(ctx, adaTok); err != nil {
		t.Errorf("ValidateToken without a token = %v; want nil", err)
	}
	all, err := users.GetAll(tokenauth.BearerContext(ctx, rootTok.GetToken()), &pb.Request{})
	if err != nil || len(all.GetUsers()) != 3 {
		t.Fatalf("GetAll as the admin = %v, %v; want 3 users", all, err)
	}
	bob := all.Users[1].Id

	// Tokens that must not pass: signed with another secret, expired,
	// tampered with.
	user := &User{ID: ada.User.Id, Name: "Ada", Email: testAdmin}
	forged, _ := newTokenService([]byte("another-secret-0123456789abcdef-0123"), time.Hour, testAdmin).Encode(user)
	old := newTokenService([]byte(testSecret), time.Hour, testAdmin)
	old.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, _ := old.Encode(user)
	tampered := rootTok.GetToken()[:len(rootTok.GetToken())-4] + "AAAA"

	bearer := func(tok string) context.Context { return tokenauth.BearerContext(ctx, tok) }
	tests := []struct {
		name       string
		call       func() error
		wantCode   int32
		wantDetail string
	}{
		{"Get, no token", func() error { _, err := users.Get(ctx, &pb.User{Id: ada.User.Id}); return err }, 401, tokenauth.DetailMissing},
		{"Get, forged", func() error { _, err := users.Get(bearer(forged), &pb.User{Id: ada.User.Id}); return err }, 401, tokenauth.DetailInvalid},
		{"Get, expired", func() error { _, err := users.Get(bearer(expired), &pb.User{Id: ada.User.Id}); return err }, 401, tokenauth.DetailInvalid},
		{"Get, tampered", func() error { _, err := users.Get(bearer(tampered), &pb.User{Id: ada.User.Id}); return err }, 401, tokenauth.DetailInvalid},
		{"Get, another user's", func() error { _, err := users.Get(bearer(adaTok.Token), &pb.User{Id: bob}); return err }, 403, "you may read only your own user"},
		{"Get, own", func() error { _, err := users.Get(bearer(adaTok.Token), &pb.User{Id: ada.User.Id}); return err }, 0, ""},
		{"Get, admin reads another's", func() error { _, err := users.Get(bearer(rootTok.Token), &pb.User{Id: bob}); return err }, 0, ""},
		{"GetAll, no token", func() error { _, err := users.GetAll(ctx, &pb.Request{}); return err }, 401, tokenauth.DetailMissing},
		{"GetAll, forged admin", func() error { _, err := users.GetAll(bearer(forged), &pb.Request{}); return err }, 401, tokenauth.DetailInvalid},
		{"GetAll, expired admin", func() error { _, err := users.GetAll(bearer(expired), &pb.Request{}); return err }, 401, tokenauth.DetailInvalid},
		{"GetAll, not an admin", func() error { _, err := users.GetAll(bearer(adaTok.Token), &pb.Request{}); return err }, 403, "UserService.GetAll is for admins only"},
		// micro call --metadata 'Authorization:Bearer <token>' sets exactly this.
		{"GetAll, micro call's metadata", func() error {
			_, err := users.GetAll(metadata.NewContext(ctx, metadata.Metadata{"Authorization": "Bearer " + rootTok.Token}), &pb.Request{})
			return err
		}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if microCode(err) != tt.wantCode {
				t.Fatalf("%s = %v; want code %d", tt.name, err, tt.wantCode)
			}
			if err != nil {
				if me := merrors.FromError(err); me.Detail != tt.wantDetail || me.Id != serviceName {
					t.Errorf("%s error = %+v; want id %s, detail %q", tt.name, me, serviceName, tt.wantDetail)
				}
			}
		})
	}
}

// An ADMIN_EMAILS address without an account is named at start: whoever
// creates it first becomes an admin.
func TestWarnAdminsWithoutAccount(t *testing.T) {
	store := &fakeStore{users: []User{{ID: "1", Email: "root@example.com"}}}
	logs := &logbuf.Buffer{}
	warnAdminsWithoutAccount(context.Background(), store, []string{"root@example.com", "new@example.com"},
		slog.New(slog.NewJSONHandler(logs, nil)))
	if out := logs.String(); strings.Count(out, "\n") != 1 || !strings.Contains(out, "new@example.com") {
		t.Errorf("logged %q; want one warning, naming new@example.com only", out)
	}
}
