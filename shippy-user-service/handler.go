package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/mail"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"

	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// serviceName is the go-micro name of the user-service and the id of every
// error it returns.
const serviceName = "go.micro.srv.user"

// Input limits.
const (
	maxNameChars     = 100
	maxCompanyChars  = 100
	maxEmailBytes    = 254 // RFC 5321 path limit
	minPasswordBytes = 8
)

// userStore is the persistence the handler needs. Create stores the user and
// its user.created event atomically (the transactional outbox).
type userStore interface {
	Create(ctx context.Context, u *User, ev *pb.UserCreated) error
	Get(ctx context.Context, id string) (*User, error)
	GetByEmail(ctx context.Context, email string) (*User, error)
	List(ctx context.Context) ([]User, error)
}

// passwordHasher hides bcrypt so tests can count its work.
type passwordHasher interface {
	Hash(password []byte) ([]byte, error)
	Compare(hash, password []byte) error
}

// loginThrottle slows password guessing (limiter.go). Begin counts an
// attempt as failed and refuses it (wait > 0) while the caller must wait;
// Succeeded takes the count back.
type loginThrottle interface {
	Begin(ctx context.Context, email, caller string) (wait time.Duration, err error)
	Succeeded(ctx context.Context, email, caller string) error
}

// eventNotifier wakes the outbox relay after a commit that enqueued an
// event, so that it goes out at once instead of at the next sweep.
type eventNotifier interface {
	Notify()
}

// handler implements pb.UserServiceHandler.
type handler struct {
	store   userStore
	hasher  passwordHasher
	tokens  *tokenService
	events  eventNotifier
	limiter loginThrottle
	log     *slog.Logger
	now     func() time.Time
	// metrics counts users created and refused logins (ops.go); nil
	// counts nothing.
	metrics handlerMetrics

	// dummyHash is compared against when an email is unknown, so that Auth
	// spends the same bcrypt time whether or not the account exists.
	dummyHash []byte
}

func newHandler(store userStore, hasher passwordHasher, tokens *tokenService, events eventNotifier, limiter loginThrottle, log *slog.Logger) (*handler, error) {
	dummy, err := hasher.Hash([]byte("shippy dummy password for timing"))
	if err != nil {
		return nil, fmt.Errorf("compute dummy hash: %w", err)
	}
	return &handler{
		store: store, hasher: hasher, tokens: tokens, events: events, limiter: limiter,
		log: log, now: time.Now, dummyHash: dummy,
	}, nil
}

var _ pb.UserServiceHandler = (*handler)(nil)

// accessPolicy is who may call each endpoint, enforced by tokenauth's
// wrapper before the handler runs. Sign-up, sign-in and token checks stay
// open, as in the tutorial; reading users needs a token (Get: the caller's
// own user unless an admin), listing them the admin claim.
var accessPolicy = tokenauth.Policy{
	"UserService.Create":        tokenauth.Open,
	"UserService.Auth":          tokenauth.Open,
	"UserService.ValidateToken": tokenauth.Open,
	"UserService.Get":           tokenauth.Authenticated,
	"UserService.GetAll":        tokenauth.AdminOnly,
}

func (h *handler) Create(ctx context.Context, req *pb.User, res *pb.Response) error {
	// Everything is checked before bcrypt runs, so oversized input costs
	// no hashing work.
	if err := validateNewUser(req); err != nil {
		return merrors.BadRequest(serviceName, "%s", err.Error())
	}
	hash, err := h.hasher.Hash([]byte(req.Password))
	if err != nil {
		return h.internal(ctx, "hash password", err)
	}
	u := &User{
		ID:           uuid.NewString(),
		Name:         req.Name,
		Company:      req.Company,
		Email:        normalizeEmail(req.Email),
		PasswordHash: string(hash),
		// PostgreSQL keeps microseconds; truncating keeps the event's time
		// equal to the stored one.
		CreatedAt: h.now().UTC().Truncate(time.Microsecond),
	}
	ev := &pb.UserCreated{
		EventId:         uuid.NewString(),
		Id:              u.ID,
		Name:            u.Name,
		Company:         u.Company,
		Email:           u.Email,
		CreatedAtUnixMs: u.CreatedAt.UnixMilli(),
	}
	// The event is committed with the user; the relay publishes it, so a
	// broker failure cannot fail Create or lose the event.
	if err := h.store.Create(ctx, u, ev); err != nil {
		if errors.Is(err, errEmailTaken) {
			return merrors.Conflict(serviceName, "a user with this email already exists")
		}
		return h.internal(ctx, "create user", err)
	}
	h.events.Notify()
	h.userCreated()
	h.log.InfoContext(ctx, "user created", "user_id", u.ID, "event_id", ev.EventId)

	token, err := h.tokens.Encode(u)
	if err != nil {
		return h.internal(ctx, "sign token", err)
	}

	res.User = toProto(u)
	res.Token = &pb.Token{Token: token, Valid: true}
	return nil
}

func (h *handler) Get(ctx context.Context, req *pb.User, res *pb.Response) error {
	// The wrapper verified the token; without it nobody is let in.
	caller, ok := tokenauth.FromContext(ctx)
	if !ok {
		return merrors.Unauthorized(serviceName, tokenauth.DetailMissing)
	}
	if req.Id == "" {
		return merrors.BadRequest(serviceName, "id is required")
	}
	// Before any lookup: a non-admin learns nothing about other ids, not
	// even whether they exist.
	if !caller.Admin && req.Id != caller.Subject {
		return merrors.Forbidden(serviceName, "you may read only your own user")
	}
	if _, err := uuid.Parse(req.Id); err != nil {
		return merrors.BadRequest(serviceName, "id must be a user id (a UUID)")
	}
	u, err := h.store.Get(ctx, req.Id)
	if err != nil {
		if errors.Is(err, errUserNotFound) {
			return merrors.NotFound(serviceName, "no user with id %s", req.Id)
		}
		return h.internal(ctx, "get user", err)
	}
	res.User = toProto(u)
	return nil
}

func (h *handler) GetAll(ctx context.Context, _ *pb.Request, res *pb.Response) error {
	caller, ok := tokenauth.FromContext(ctx)
	switch {
	case !ok:
		return merrors.Unauthorized(serviceName, tokenauth.DetailMissing)
	case !caller.Admin:
		return merrors.Forbidden(serviceName, "UserService.GetAll is for admins only")
	}
	users, err := h.store.List(ctx)
	if err != nil {
		return h.internal(ctx, "list users", err)
	}
	res.Users = make([]*pb.User, 0, len(users))
	for i := range users {
		res.Users = append(res.Users, toProto(&users[i]))
	}
	return nil
}

// errBadCredentials is Auth's one answer for an unknown email and a wrong
// password alike, so a caller cannot tell which accounts exist.
func errBadCredentials() error {
	return merrors.Unauthorized(serviceName, "invalid email or password")
}

func (h *handler) Auth(ctx context.Context, req *pb.User, res *pb.Token) (err error) {
	defer func() { h.countAuthFailure(err) }()
	// Inputs no account can have are refused before any work (and never
	// reach the throttle's table): the checks Create makes, on the email as
	// sent (lower-casing would turn invalid UTF-8 into U+FFFD).
	raw := strings.TrimSpace(req.Email)
	if raw == "" || len(raw) > maxEmailBytes || checkText("email", raw, maxEmailBytes) != nil ||
		len(req.Password) == 0 || len(req.Password) > maxPasswordBytes {
		return errBadCredentials()
	}
	email := normalizeEmail(raw)
	// Begin counts this attempt as failed until the password matches.
	caller := callerOf(ctx)
	wait, err := h.limiter.Begin(ctx, email, caller)
	if err != nil {
		return h.internal(ctx, "auth: throttle", err)
	}
	if wait > 0 {
		h.log.WarnContext(ctx, "auth refused: too many failed attempts", "caller", caller, "retry_after_s", seconds(wait))
		return merrors.New(serviceName, fmt.Sprintf("too many failed attempts: try again in %ds", seconds(wait)), 429)
	}

	u, err := h.store.GetByEmail(ctx, email)
	switch {
	case errors.Is(err, errUserNotFound):
		// Same bcrypt work as a wrong password, so timing reveals nothing.
		_ = h.hasher.Compare(h.dummyHash, []byte(req.Password))
		h.log.InfoContext(ctx, "auth failed", "caller", caller)
		return errBadCredentials()
	case err != nil:
		return h.internal(ctx, "auth: look up user", err)
	}
	if err := h.hasher.Compare([]byte(u.PasswordHash), []byte(req.Password)); err != nil {
		h.log.InfoContext(ctx, "auth failed", "user_id", u.ID, "caller", caller)
		return errBadCredentials()
	}
	if err := h.limiter.Succeeded(ctx, email, caller); err != nil {
		// The owner still signs in; the attempt stays counted as failed.
		h.log.WarnContext(ctx, "auth: clear throttle", "user_id", u.ID, "err", err)
	}

	token, err := h.tokens.Encode(u)
	if err != nil {
		return h.internal(ctx, "sign token", err)
	}
	h.log.InfoContext(ctx, "auth succeeded", "user_id", u.ID)
	res.Token = token
	res.Valid = true
	return nil
}

func (h *handler) ValidateToken(ctx context.Context, req *pb.Token, res *pb.Token) error {
	res.Valid = false
	if req.Token == "" {
		return merrors.Unauthorized(serviceName, "token is required")
	}
	claims, err := h.tokens.Decode(req.Token)
	if err != nil {
		h.log.DebugContext(ctx, "token rejected", "err", err)
		return merrors.Unauthorized(serviceName, "invalid token")
	}
	res.Token = req.Token
	res.Valid = true
	h.log.DebugContext(ctx, "token valid", "user_id", claims.Subject)
	return nil
}

// internal logs err with what failed and returns a 500 that says nothing
// about the internals.
func (h *handler) internal(ctx context.Context, what string, err error) error {
	h.log.ErrorContext(ctx, what, "err", err)
	return merrors.InternalServerError(serviceName, "internal error; try again later")
}

// callerOf names the request's caller for the login throttle: the IP
// address go-micro's server saw the request come from. The server writes
// the metadata "Remote" itself, over anything a client sent under that key.
// IPv6 addresses count by their /64, which one host can rotate through.
// Anything else (the NATS transport's reply subject, new with each
// connection) is one caller, "unknown": callers the service cannot tell
// apart share their limits rather than each connection getting fresh ones.
func callerOf(ctx context.Context) string {
	md, _ := metadata.FromContext(ctx)
	host, _, err := net.SplitHostPort(md["Remote"])
	if err != nil {
		return "unknown"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "unknown"
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

func toProto(u *User) *pb.User {
	return &pb.User{Id: u.ID, Name: u.Name, Company: u.Company, Email: u.Email}
}

func seconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// validateNewUser checks a Create request. The messages are shown to the
// caller.
func validateNewUser(u *pb.User) error {
	if err := checkText("name", u.Name, maxNameChars); err != nil {
		return err
	}
	if strings.TrimSpace(u.Name) == "" {
		return errors.New("name is required")
	}
	if err := checkText("company", u.Company, maxCompanyChars); err != nil {
		return err
	}
	if err := validateEmail(u.Email); err != nil {
		return err
	}
	switch n := len(u.Password); {
	case n < minPasswordBytes:
		return fmt.Errorf("password must be at least %d bytes", minPasswordBytes)
	case n > maxPasswordBytes:
		return fmt.Errorf("password must be at most %d bytes (the bcrypt limit)", maxPasswordBytes)
	}
	return nil
}

// checkText rejects invalid UTF-8, control characters (newlines, escapes,
// NUL) and values over max characters. The size is checked first so an
// oversized value is not scanned.
func checkText(field, s string, max int) error {
	if len(s) > max*utf8.UTFMax || utf8.RuneCountInString(s) > max {
		return fmt.Errorf("%s must be at most %d characters", field, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s must be valid UTF-8", field)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s must not contain control characters", field)
		}
	}
	return nil
}

func validateEmail(raw string) error {
	email := strings.TrimSpace(raw)
	if email == "" {
		return errors.New("email is required")
	}
	if len(email) > maxEmailBytes {
		return fmt.Errorf("email must be at most %d bytes", maxEmailBytes)
	}
	if err := checkText("email", email, maxEmailBytes); err != nil {
		return err
	}
	addr, err := mail.ParseAddress(email)
	// A bare address only: "Bob <bob@example.com>" parses but is not one.
	if err != nil || addr.Name != "" || addr.Address != email {
		return errors.New("email must be a valid address such as ada@example.com")
	}
	return nil
}
