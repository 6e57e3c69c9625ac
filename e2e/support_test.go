package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
)

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// parseDBURL splits a PostgreSQL URL into the DB_* variables.
func parseDBURL(t *testing.T, raw string) map[string]string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}
	pass, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return map[string]string{
		"DB_HOST":     u.Hostname(),
		"DB_PORT":     port,
		"DB_USER":     u.User.Username(),
		"DB_PASSWORD": pass,
		"DB_NAME":     u.Path[1:],
	}
}
