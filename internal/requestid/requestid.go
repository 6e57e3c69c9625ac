// Package requestid carries one id per request from a client, through a
// go-micro RPC, an event and its subscriber, into every log line about it,
// so that `grep <id>` across the services' logs follows one user.
//
// The id travels as the go-micro metadata (and message header) X-Request-Id.
// A client sets it with Outgoing; a server reads it with NewHandlerWrapper,
// which keeps a sent id that passes Valid and makes one otherwise, so every
// request has one; a subscriber reads it with NewSubscriberWrapper, which
// keeps a valid one and makes none (an event without one, from an older
// publisher, is followed by its event id). Both put it in the context, where
// FromContext finds it and NewLogHandler adds it, as request_id, to every
// line logged with a *Context method of log/slog.
//
// The key is matched in any case: over go-micro's http transport it arrives
// canonicalised by net/http (X-Request-Id), over the NATS transport as the
// caller wrote it. An id is never logged as sent unless it is short and of a
// plain charset: anything else is replaced, so a caller cannot forge or
// garble log lines through it.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"

	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/server"
)

// Header is the go-micro metadata key, the event's message header and the
// email's header the id travels under.
const Header = "X-Request-Id"

// LogKey is the attribute NewLogHandler adds to log lines.
const LogKey = "request_id"

// MaxLen is the longest id kept; longer ones are replaced.
const MaxLen = 64

// New returns a random id of 16 hex characters (64 bits): short enough to
// read out to an operator, unique enough to grep a day of logs for.
func New() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // since Go 1.24 it returns no error (it crashes the program instead)
	return hex.EncodeToString(b)
}

// Valid reports whether id may be kept and logged as sent: 1 to MaxLen
// ASCII letters, digits, '-', '_', '.' or ':' (UUIDs, hex, ULIDs, ...).
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

type ctxKey struct{}

// NewContext returns ctx carrying id as the request's id.
func NewContext(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the request's id, or "" when ctx has none.
func FromContext(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// FromHeader returns the valid id in header (go-micro metadata or a broker
// message's header) under Header in any case; ok is false when there is none
// or it is not Valid.
func FromHeader(header map[string]string) (id string, ok bool) {
	if v, found := header[Header]; found {
		return v, Valid(v)
	}
	for k, v := range header {
		if strings.EqualFold(k, Header) {
			return v, Valid(v)
		}
	}
	return "", false
}

// Outgoing returns ctx whose go-micro metadata sends id as Header with the
// next call or publish, replacing any id under another spelling of the key.
func Outgoing(ctx context.Context, id string) context.Context {
	md, _ := metadata.FromContext(ctx) // a copy
	out := make(metadata.Metadata, len(md)+1)
	for k, v := range md {
		if !strings.EqualFold(k, Header) {
			out[k] = v
		}
	}
	out[Header] = id
	return metadata.NewContext(ctx, out)
}

// NewHandlerWrapper returns a go-micro server.HandlerWrapper giving each
// request its id: the caller's, when it sent a valid one, else a new one.
// The id is in the handler's context (FromContext) and in its go-micro
// metadata, so that calls and publishes the handler makes with that context
// carry it on. Put it first among the server's wrappers, so that lines
// logged by the wrappers after it (a refused token, say) carry the id too.
func NewHandlerWrapper() server.HandlerWrapper {
	return func(next server.HandlerFunc) server.HandlerFunc {
		return func(ctx context.Context, req server.Request, rsp any) error {
			md, _ := metadata.FromContext(ctx)
			id, ok := FromHeader(md)
			if !ok {
				id = New()
			}
			return next(Outgoing(NewContext(ctx, id), id), req, rsp)
		}
	}
}

// NewSubscriberWrapper returns a go-micro server.SubscriberWrapper putting
// the valid id a message carries under Header into the subscriber's
// context. A message without one (or with an invalid one) gets none: a new
// id would match nothing upstream.
func NewSubscriberWrapper() server.SubscriberWrapper {
	return func(next server.SubscriberFunc) server.SubscriberFunc {
		return func(ctx context.Context, msg server.Message) error {
			if id, ok := FromHeader(msg.Header()); ok {
				ctx = NewContext(ctx, id)
			}
			return next(ctx, msg)
		}
	}
}

// NewLogHandler wraps h so that every record logged with a context carrying
// an id (Logger.InfoContext, LogAttrs, ...) gets the attribute request_id.
func NewLogHandler(h slog.Handler) slog.Handler {
	return logHandler{h}
}

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if id := FromContext(ctx); id != "" {
			r.AddAttrs(slog.String(LogKey, id))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(attrs)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}
