package tokenauth

import (
	"context"
	"errors"
	"testing"

	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/server"
)

// fakeVerifier accepts the tokens it knows.
type fakeVerifier map[string]Claims

func (f fakeVerifier) Verify(token string) (Claims, error) {
	c, ok := f[token]
	if !ok {
		return Claims{}, errors.New("token is expired")
	}
	return c, nil
}

// fakeRequest is the part of server.Request the wrapper reads.
type fakeRequest struct {
	server.Request
	endpoint string
}

func (r fakeRequest) Service() string  { return "go.micro.srv.test" }
func (r fakeRequest) Endpoint() string { return r.endpoint }

var (
	ada   = Claims{Subject: "ada-id", Email: "ada@example.com"}
	root  = Claims{Subject: "root-id", Email: "root@example.com", Admin: true}
	users = fakeVerifier{"ada-token": ada, "root-token": root}
	rules = Policy{"S.Open": Open, "S.Mine": Authenticated, "S.All": AdminOnly}
)

// call runs the wrapper around a handler that records the claims it saw.
func call(t *testing.T, endpoint string, md metadata.Metadata) (claims Claims, called bool, err error) {
	t.Helper()
	h := NewHandlerWrapper(users, rules)(func(ctx context.Context, _ server.Request, _ any) error {
		claims, _ = FromContext(ctx)
		called = true
		return nil
	})
	ctx := context.Background()
	if md != nil {
		ctx = metadata.NewContext(ctx, md)
	}
	err = h(ctx, fakeRequest{endpoint: endpoint}, nil)
	return claims, called, err
}

func TestWrapper(t *testing.T) {
	bearer := func(tok string) metadata.Metadata { return metadata.Metadata{"Authorization": "Bearer " + tok} }
	tests := []struct {
		name       string
		endpoint   string
		md         metadata.Metadata
		wantCode   int32
		wantDetail string
		wantClaims Claims
	}{
		{"open, no token", "S.Open", nil, 0, "", Claims{}},
		{"open, a bad token is not even read", "S.Open", bearer("forged"), 0, "", Claims{}},
		{"token endpoint, no metadata", "S.Mine", nil, 401, DetailMissing, Claims{}},
		{"token endpoint, other metadata", "S.Mine", metadata.Metadata{"X-Other": "1"}, 401, DetailMissing, Claims{}},
		{"token endpoint, empty bearer", "S.Mine", metadata.Metadata{"Authorization": "Bearer "}, 401, DetailMissing, Claims{}},
		{"token endpoint, Basic scheme", "S.Mine", metadata.Metadata{"Authorization": "Basic YWRhOnB3"}, 401, DetailMissing, Claims{}},
		{"token endpoint, bare token", "S.Mine", metadata.Metadata{"Authorization": "ada-token"}, 401, DetailMissing, Claims{}},
		{"token endpoint, forged or expired", "S.Mine", bearer("forged"), 401, DetailInvalid, Claims{}},
		{"token endpoint, valid", "S.Mine", bearer("ada-token"), 0, "", ada},
		{"token endpoint, key and scheme in lower case (NATS transport)", "S.Mine",
			metadata.Metadata{"authorization": "bearer ada-token"}, 0, "", ada},
		{"token endpoint, upper case", "S.Mine", metadata.Metadata{"AUTHORIZATION": "BEARER  ada-token "}, 0, "", ada},
		{"admin endpoint, no token", "S.All", nil, 401, DetailMissing, Claims{}},
		{"admin endpoint, forged", "S.All", bearer("forged"), 401, DetailInvalid, Claims{}},
		{"admin endpoint, not admin", "S.All", bearer("ada-token"), 403, "S.All is for admins only", Claims{}},
		{"admin endpoint, admin", "S.All", bearer("root-token"), 0, "", root},
		{"endpoint not in the policy", "S.New", bearer("root-token"), 403, "S.New is not allowed", Claims{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims, called, err := call(t, tt.endpoint, tt.md)
			if tt.wantCode == 0 {
				if err != nil || !called || claims != tt.wantClaims {
					t.Fatalf("%s = called %v with %+v, %v; want the handler called with %+v", tt.endpoint, called, claims, err, tt.wantClaims)
				}
				return
			}
			var me *merrors.Error
			if !errors.As(err, &me) || me.Code != tt.wantCode || me.Detail != tt.wantDetail || me.Id != "go.micro.srv.test" {
				t.Errorf("%s = %v; want code %d, detail %q, id go.micro.srv.test", tt.endpoint, err, tt.wantCode, tt.wantDetail)
			}
			if called {
				t.Errorf("%s: the handler ran; want it refused before", tt.endpoint)
			}
		})
	}
}

func TestBearerContext(t *testing.T) {
	ctx := metadata.NewContext(context.Background(), metadata.Metadata{"Other": "kept"})
	ctx = BearerContext(ctx, "tok")
	md, _ := metadata.FromContext(ctx)
	if md["Authorization"] != "Bearer tok" || md["Other"] != "kept" {
		t.Errorf("BearerContext metadata = %v; want Authorization: Bearer tok and Other kept", md)
	}
	if tok, ok := bearer(ctx); !ok || tok != "tok" {
		t.Errorf("bearer(BearerContext(tok)) = %q, %v; want tok", tok, ok)
	}
}
