package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/shippy/shippy/internal/tokenauth"
)

// tokenIssuer is the iss claim of every token this service signs and the only
// one it accepts.
const tokenIssuer = "shippy.user"

// Claims are what a token says about its user: who (subject = user id), name,
// email, and whether ADMIN_EMAILS named the email when the token was signed.
// Never the password or its hash.
type Claims struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Admin bool   `json:"admin,omitempty"`
	jwt.RegisteredClaims
}

// tokenService signs and checks HS256 JWTs with one secret.
type tokenService struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	// admins are the lower-cased emails of ADMIN_EMAILS.
	admins map[string]bool
}

func newTokenService(secret []byte, ttl time.Duration, adminEmails ...string) *tokenService {
	admins := make(map[string]bool, len(adminEmails))
	for _, e := range adminEmails {
		admins[normalizeEmail(e)] = true
	}
	return &tokenService{secret: secret, ttl: ttl, now: time.Now, admins: admins}
}

// Encode returns a signed token for u, valid for the service's TTL, with
// the admin claim when ADMIN_EMAILS names u's email now.
func (t *tokenService) Encode(u *User) (string, error) {
	now := t.now()
	claims := Claims{
		Name:  u.Name,
		Email: u.Email,
		Admin: t.admins[normalizeEmail(u.Email)],
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        uuid.NewString(),
			Issuer:    tokenIssuer,
			Subject:   u.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(t.ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Decode verifies token and returns its claims. It accepts only HS256 tokens
// signed with the service's secret, issued by this service, with an expiry
// in the future and no not-before in the future.
func (t *tokenService) Decode(token string) (*Claims, error) {
	claims := &Claims{}
	parser := jwt.NewParser(
		// Pinning the method stops alg:none and RS256/HS256 key confusion.
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(t.now),
	)
	_, err := parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) {
		return t.secret, nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode token: %w", err)
	}
	if claims.Subject == "" {
		return nil, errors.New("decode token: no subject")
	}
	return claims, nil
}

// Verify is Decode for tokenauth's wrapper. The admin claim counts only
// while ADMIN_EMAILS still names the email: removing an admin takes effect
// when the service restarts with the new list, not when the token expires.
// A token signed before the email was listed stays a non-admin one until
// its owner signs in again.
func (t *tokenService) Verify(token string) (tokenauth.Claims, error) {
	c, err := t.Decode(token)
	if err != nil {
		return tokenauth.Claims{}, err
	}
	return tokenauth.Claims{Subject: c.Subject, Email: c.Email, Admin: c.Admin && t.admins[normalizeEmail(c.Email)]}, nil
}

var _ tokenauth.Verifier = (*tokenService)(nil)
