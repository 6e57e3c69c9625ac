package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// tokenIssuer is the iss claim of every token this service signs and the only
// one it accepts.
const tokenIssuer = "shippy.user"

// Claims are what a token says about its user: who (subject = user id), name
// and email. Never the password or its hash.
type Claims struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	jwt.RegisteredClaims
}

// tokenService signs and checks HS256 JWTs with one secret.
type tokenService struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

func newTokenService(secret []byte, ttl time.Duration) *tokenService {
	return &tokenService{secret: secret, ttl: ttl, now: time.Now}
}

// Encode returns a signed token for u, valid for the service's TTL.
func (t *tokenService) Encode(u *User) (string, error) {
	now := t.now()
	claims := Claims{
		Name:  u.Name,
		Email: u.Email,
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
