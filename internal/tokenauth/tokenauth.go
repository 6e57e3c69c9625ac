// Package tokenauth is a go-micro server wrapper that checks a bearer token
// on every request and lets through only what a per-endpoint policy allows.
// Any go-micro service can use it with a Verifier of its own; the
// user-service's token service is one.
//
// The token travels in go-micro metadata under the key Authorization, as
// "Bearer <token>": the go-micro client sends metadata set with
// metadata.NewContext (or BearerContext here), `micro call` sends it with
// --metadata 'Authorization:Bearer <token>'. Over the http transport the key
// arrives canonicalised by net/http ("Authorization"); over the NATS
// transport it arrives as the caller wrote it; the key is matched in any
// case.
//
// Errors, at the edge: no token, a token that does not verify (forged,
// expired, malformed) -> 401 Unauthorized, always with the same detail so
// that a caller cannot probe why; a valid token that the endpoint's policy
// does not allow -> 403 Forbidden.
package tokenauth

import (
	"context"
	"log/slog"
	"strings"

	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/server"
)

// MetadataKey is the go-micro metadata key the token is read from.
const MetadataKey = "Authorization"

// Detail of the 401 answers. A caller learns that the token was refused,
// never why: "expired" versus "bad signature" would help a forger.
const (
	DetailMissing = "a token is required: send the metadata Authorization: Bearer <token>"
	DetailInvalid = "invalid or expired token"
)

// Claims are what a verified token says about its caller.
type Claims struct {
	// Subject is the caller's user id.
	Subject string
	Email   string
	// Admin is true for a caller allowed the admin endpoints.
	Admin bool
}

// Verifier checks a token's signature and lifetime and returns its claims.
type Verifier interface {
	Verify(token string) (Claims, error)
}

// Access is what an endpoint requires of a caller.
type Access int

const (
	// Open endpoints take no token (sign-up, sign-in).
	Open Access = iota + 1
	// Authenticated endpoints need a valid token; the handler decides
	// what the caller may see (its own user, say) from the claims.
	Authenticated
	// AdminOnly endpoints need a valid token with the admin claim.
	AdminOnly
)

// Policy maps each endpoint ("UserService.Get") to its access. An endpoint
// not in the policy is refused with 403, so that a new endpoint is closed
// until someone decides who may call it.
type Policy map[string]Access

// Option configures the wrapper.
type Option func(*wrapper)

// WithLogger logs every refused request (endpoint, code, the real reason),
// never the token.
func WithLogger(l *slog.Logger) Option { return func(w *wrapper) { w.log = l } }

type wrapper struct {
	verifier Verifier
	policy   Policy
	log      *slog.Logger
}

// NewHandlerWrapper returns the wrapper: server.WrapHandler(NewHandlerWrapper(v, p)).
// The handler behind it finds the verified claims with FromContext.
func NewHandlerWrapper(v Verifier, p Policy, opts ...Option) server.HandlerWrapper {
	w := &wrapper{verifier: v, policy: p}
	for _, o := range opts {
		o(w)
	}
	return func(next server.HandlerFunc) server.HandlerFunc {
		return func(ctx context.Context, req server.Request, rsp any) error {
			ctx, err := w.check(ctx, req.Service(), req.Endpoint())
			if err != nil {
				return err
			}
			return next(ctx, req, rsp)
		}
	}
}

// check returns ctx with the caller's claims, or the error to answer.
func (w *wrapper) check(ctx context.Context, service, endpoint string) (context.Context, error) {
	access, ok := w.policy[endpoint]
	if !ok {
		w.refused(ctx, endpoint, 403, "endpoint not in the access policy")
		return ctx, merrors.Forbidden(service, "%s is not allowed", endpoint)
	}
	if access == Open {
		return ctx, nil
	}
	token, found := bearer(ctx)
	if !found {
		w.refused(ctx, endpoint, 401, "no bearer token")
		return ctx, merrors.Unauthorized(service, DetailMissing)
	}
	claims, err := w.verifier.Verify(token)
	if err != nil {
		w.refused(ctx, endpoint, 401, err.Error())
		return ctx, merrors.Unauthorized(service, DetailInvalid)
	}
	if access == AdminOnly && !claims.Admin {
		w.refused(ctx, endpoint, 403, "not an admin", "user_id", claims.Subject)
		return ctx, merrors.Forbidden(service, "%s is for admins only", endpoint)
	}
	return NewContext(ctx, claims), nil
}

func (w *wrapper) refused(ctx context.Context, endpoint string, code int, reason string, args ...any) {
	if w.log == nil {
		return
	}
	w.log.InfoContext(ctx, "request refused", append([]any{"endpoint", endpoint, "code", code, "reason", reason}, args...)...)
}

// bearer finds "Bearer <token>" under MetadataKey, the key and the scheme
// in any case. found is false when there is no such metadata, or it holds
// no bearer token.
func bearer(ctx context.Context) (token string, found bool) {
	md, ok := metadata.FromContext(ctx)
	if !ok {
		return "", false
	}
	for k, v := range md {
		if !strings.EqualFold(k, MetadataKey) {
			continue
		}
		scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) != "" {
			return strings.TrimSpace(tok), true
		}
	}
	return "", false
}

type claimsKey struct{}

// NewContext returns ctx carrying claims, as the wrapper hands it to the
// handler (and handler tests build it).
func NewContext(ctx context.Context, c Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// FromContext returns the verified claims of the request's caller; ok is
// false on an Open endpoint or without the wrapper.
func FromContext(ctx context.Context) (c Claims, ok bool) {
	c, ok = ctx.Value(claimsKey{}).(Claims)
	return c, ok
}

// BearerContext returns ctx whose go-micro metadata sends token as
// "Authorization: Bearer <token>" with the next call.
func BearerContext(ctx context.Context, token string) context.Context {
	return metadata.MergeContext(ctx, metadata.Metadata{MetadataKey: "Bearer " + token}, true)
}
