package main

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	pb "github.com/shippy/shippy/proto/user"
)

// FuzzValidateNewUser: arbitrary input never panics, and whatever passes
// validation is within the documented limits.
func FuzzValidateNewUser(f *testing.F) {
	f.Add("Ada", "Acme", "ada@example.com", "password")
	f.Add("'); DROP TABLE users;--", "", "a@b", "12345678")
	f.Add("Ada\n", "Ac\x00me", "Ada <ada@example.com>", strings.Repeat("p", 73))
	f.Add(strings.Repeat("ü", 101), "\xff", "ada@example.com\r\nBcc: x@y", "")
	f.Fuzz(func(t *testing.T, name, company, email, password string) {
		err := validateNewUser(&pb.User{Name: name, Company: company, Email: email, Password: password})
		if err != nil {
			return
		}
		if utf8.RuneCountInString(name) > maxNameChars || strings.TrimSpace(name) == "" || !utf8.ValidString(name) {
			t.Errorf("validateNewUser accepted name %q", name)
		}
		if utf8.RuneCountInString(company) > maxCompanyChars || !utf8.ValidString(company) {
			t.Errorf("validateNewUser accepted company %q", company)
		}
		if e := normalizeEmail(email); e == "" || len(e) > maxEmailBytes || strings.ContainsAny(e, "\r\n\x00") {
			t.Errorf("validateNewUser accepted email %q", email)
		}
		if len(password) < minPasswordBytes || len(password) > maxPasswordBytes {
			t.Errorf("validateNewUser accepted a %d-byte password", len(password))
		}
	})
}

// FuzzTokenDecode: arbitrary strings never panic, and only a token signed
// with the service's secret decodes: whatever decodes carries exactly the
// claims the service signed (no one else can produce a new valid token).
// The seed token is made per process (fuzz workers rebuild it), so it is
// checked through its claims, not compared as a string.
func FuzzTokenDecode(f *testing.F) {
	ts := &tokenService{secret: []byte(testSecret), ttl: time.Hour, now: func() time.Time { return time.Unix(1_800_000_000, 0) }}
	const sub = "6f1c4a52-1b7e-4c1e-9d1e-2b8e7f3b2a10"
	good, err := ts.Encode(&User{ID: sub, Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, 0, byte(1))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", 5, byte('A'))
	f.Add("a.b.c", 1, byte(0))
	check := func(t *testing.T, token string) {
		c, err := ts.Decode(token)
		if err == nil && (c.Subject != sub || c.Name != "Ada" || c.Email != "ada@example.com" || c.Issuer != tokenIssuer) {
			t.Errorf("Decode(%q) = %+v; want rejection", token, c)
		}
	}
	f.Fuzz(func(t *testing.T, token string, pos int, flip byte) {
		check(t, token)
		if flip == 0 {
			return
		}
		// The same with one byte of a genuine token changed.
		b := []byte(good)
		b[(pos%len(b)+len(b))%len(b)] ^= flip
		check(t, string(b))
	})
}

// FuzzAuth: arbitrary credentials never panic and never authenticate
// without the password.
func FuzzAuth(f *testing.F) {
	th := newFuzzHandler(f)
	f.Add("ada@example.com", "wrong password")
	f.Add("ADA@EXAMPLE.COM", "")
	f.Add(" ada@example.com\x00", strings.Repeat("x", 100))
	f.Fuzz(func(t *testing.T, email, password string) {
		err := th.Auth(context.Background(), &pb.User{Email: email, Password: password}, &pb.Token{})
		if err == nil && password != "correct horse" {
			t.Errorf("Auth(%q, %q) succeeded", email, password)
		}
	})
}

func newFuzzHandler(f *testing.F) *handler {
	th := newTestHandler(f)
	if err := th.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: "correct horse"}, &pb.Response{}); err != nil {
		f.Fatal(err)
	}
	// No lock-out while fuzzing.
	th.limiter = noThrottle{}
	return th.handler
}
