package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigSMTP(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	pwFile := write("password", testPassword+"\r\n")
	emptyFile := write("empty", "\n")
	notPEM := write("not.pem", "not a certificate")
	missing := filepath.Join(dir, "missing")
	from := map[string]string{"MAIL_FROM": testFrom}
	with := func(env map[string]string) map[string]string {
		all := map[string]string{"MAIL_FROM": testFrom}
		for k, v := range env {
			all[k] = v
		}
		return all
	}

	type want struct {
		host     string
		port     int
		security smtpSecurity
		user     string
		password string
		timeout  time.Duration
		redacted string
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    *want
		wantErr string // the variable the error names
	}{
		{"unset: the logging mailer", nil, nil, ""},
		{"smtp: STARTTLS required, port 587", with(map[string]string{"SMTP_URL": "smtp://mail.example.com"}),
			&want{"mail.example.com", 587, startTLSRequired, "", "", 5 * time.Second, "smtp://mail.example.com"}, ""},
		{"smtp with user, password and port", with(map[string]string{"SMTP_URL": "smtp://shippy:" + testPassword + "@mail.example.com:2525"}),
			&want{"mail.example.com", 2525, startTLSRequired, "shippy", testPassword, 5 * time.Second, "smtp://shippy:xxxxx@mail.example.com:2525"}, ""},
		{"percent-encoded password", with(map[string]string{"SMTP_URL": "smtp://shippy:p%40ss%2Fw@mail.example.com"}),
			&want{"mail.example.com", 587, startTLSRequired, "shippy", "p@ss/w", 5 * time.Second, "smtp://shippy:xxxxx@mail.example.com"}, ""},
		{"starttls=required", with(map[string]string{"SMTP_URL": "smtp://mail.example.com?starttls=required"}),
			&want{"mail.example.com", 587, startTLSRequired, "", "", 5 * time.Second, "smtp://mail.example.com?starttls=required"}, ""},
		{"starttls=opportunistic", with(map[string]string{"SMTP_URL": "smtp://mail.example.com:25?starttls=opportunistic"}),
			&want{"mail.example.com", 25, startTLSOpportunistic, "", "", 5 * time.Second, "smtp://mail.example.com:25?starttls=opportunistic"}, ""},
		{"starttls=none for Mailpit", with(map[string]string{"SMTP_URL": "smtp://mailpit:1025?starttls=none"}),
			&want{"mailpit", 1025, startTLSNone, "", "", 5 * time.Second, "smtp://mailpit:1025?starttls=none"}, ""},
		{"smtps: implicit TLS, port 465", with(map[string]string{"SMTP_URL": "smtps://mail.example.com"}),
			&want{"mail.example.com", 465, implicitTLS, "", "", 5 * time.Second, "smtps://mail.example.com"}, ""},
		{"password from a file", with(map[string]string{"SMTP_URL": "smtps://shippy@mail.example.com", "SMTP_PASSWORD_FILE": pwFile}),
			&want{"mail.example.com", 465, implicitTLS, "shippy", testPassword, 5 * time.Second, "smtps://shippy@mail.example.com"}, ""},
		{"IPv6 host", with(map[string]string{"SMTP_URL": "smtp://[::1]:2525"}),
			&want{"::1", 2525, startTLSRequired, "", "", 5 * time.Second, "smtp://[::1]:2525"}, ""},
		{"timeout", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_TIMEOUT": "2s"}),
			&want{"mail.example.com", 587, startTLSRequired, "", "", 2 * time.Second, "smtp://mail.example.com"}, ""},
		{"timeout up to half a longer lease", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_TIMEOUT": "7s", "EMAIL_SEND_LEASE": "14s"}),
			&want{"mail.example.com", 587, startTLSRequired, "", "", 7 * time.Second, "smtp://mail.example.com"}, ""},

		{"MAIL_FROM without SMTP_URL", from, nil, "MAIL_FROM"},
		{"SMTP_TIMEOUT without SMTP_URL", map[string]string{"SMTP_TIMEOUT": "2s"}, nil, "SMTP_TIMEOUT"},
		{"MAIL_TEMPLATES_DIR without SMTP_URL", map[string]string{"MAIL_TEMPLATES_DIR": dir}, nil, "MAIL_TEMPLATES_DIR"},
		{"SMTP_PASSWORD_FILE without SMTP_URL", map[string]string{"SMTP_PASSWORD_FILE": pwFile}, nil, "SMTP_PASSWORD_FILE"},
		{"SMTP_CA_FILE without SMTP_URL", map[string]string{"SMTP_CA_FILE": notPEM}, nil, "SMTP_CA_FILE"},
		{"no MAIL_FROM", map[string]string{"SMTP_URL": "smtp://mail.example.com"}, nil, "MAIL_FROM"},
		{"bad MAIL_FROM", map[string]string{"SMTP_URL": "smtp://mail.example.com", "MAIL_FROM": "Shippy welcome@"}, nil, "MAIL_FROM"},
		{"not a URL, with a password", with(map[string]string{"SMTP_URL": "smtp://shippy:" + testPassword + "%zz@mail.example.com"}), nil, "SMTP_URL"},
		{"bad port, with a password", with(map[string]string{"SMTP_URL": "smtp://shippy:" + testPassword + "@mail.example.com:99999"}), nil, "SMTP_URL"},
		{"http scheme", with(map[string]string{"SMTP_URL": "http://mail.example.com"}), nil, "SMTP_URL"},
		{"no scheme", with(map[string]string{"SMTP_URL": "mail.example.com:587"}), nil, "SMTP_URL"},
		{"no host", with(map[string]string{"SMTP_URL": "smtp://:587"}), nil, "SMTP_URL"},
		{"a path", with(map[string]string{"SMTP_URL": "smtp://mail.example.com/inbox"}), nil, "SMTP_URL"},
		{"unknown query", with(map[string]string{"SMTP_URL": "smtp://mail.example.com?tls=none"}), nil, "SMTP_URL"},
		{"bad starttls", with(map[string]string{"SMTP_URL": "smtp://mail.example.com?starttls=maybe"}), nil, "SMTP_URL"},
		{"starttls twice", with(map[string]string{"SMTP_URL": "smtp://mail.example.com?starttls=none&starttls=required"}), nil, "SMTP_URL"},
		{"starttls with smtps", with(map[string]string{"SMTP_URL": "smtps://mail.example.com?starttls=none"}), nil, "SMTP_URL"},
		{"user without password", with(map[string]string{"SMTP_URL": "smtp://shippy@mail.example.com"}), nil, "SMTP_URL"},
		{"password without user", with(map[string]string{"SMTP_URL": "smtp://:" + testPassword + "@mail.example.com"}), nil, "SMTP_URL"},
		{"password file without user", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_PASSWORD_FILE": pwFile}), nil, "SMTP_URL"},
		{"password twice", with(map[string]string{"SMTP_URL": "smtp://shippy:" + testPassword + "@mail.example.com", "SMTP_PASSWORD_FILE": pwFile}), nil, "SMTP_PASSWORD_FILE"},
		{"empty password file", with(map[string]string{"SMTP_URL": "smtp://shippy@mail.example.com", "SMTP_PASSWORD_FILE": emptyFile}), nil, "SMTP_PASSWORD_FILE"},
		{"missing password file", with(map[string]string{"SMTP_URL": "smtp://shippy@mail.example.com", "SMTP_PASSWORD_FILE": missing}), nil, "SMTP_PASSWORD_FILE"},
		{"password in clear text", with(map[string]string{"SMTP_URL": "smtp://shippy:" + testPassword + "@mailpit:1025?starttls=none"}), nil, "SMTP_URL"},
		{"timeout over half the lease", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_TIMEOUT": "6s"}), nil, "SMTP_TIMEOUT"},
		{"bad timeout", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_TIMEOUT": "10"}), nil, "SMTP_TIMEOUT"},
		{"zero timeout", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_TIMEOUT": "0s"}), nil, "SMTP_TIMEOUT"},
		{"CA file without a certificate", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_CA_FILE": notPEM}), nil, "SMTP_CA_FILE"},
		{"missing CA file", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "SMTP_CA_FILE": missing}), nil, "SMTP_CA_FILE"},
		{"missing templates directory", with(map[string]string{"SMTP_URL": "smtp://mail.example.com", "MAIL_TEMPLATES_DIR": missing}), nil, "MAIL_TEMPLATES_DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadConfig(%v) = %v; want an error naming %s", tt.env, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), testPassword) {
					t.Errorf("LoadConfig(%v) = %v; the error shows the password", tt.env, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig(%v) = %v; want nil", tt.env, err)
			}
			if tt.want == nil {
				if cfg.SMTP != nil {
					t.Errorf("LoadConfig(%v).SMTP = %v; want nil (the logging mailer)", tt.env, cfg.SMTP)
				}
				return
			}
			c := cfg.SMTP
			if c == nil {
				t.Fatalf("LoadConfig(%v).SMTP = nil; want %+v", tt.env, *tt.want)
			}
			got := want{c.Host, c.Port, c.Security, c.Username, c.password, c.Timeout, c.String()}
			if got != *tt.want {
				t.Errorf("LoadConfig(%v).SMTP = %+v; want %+v", tt.env, got, *tt.want)
			}
			if c.From.Address != "welcome@shippy.test" || c.From.Name != "Shippy" {
				t.Errorf("From = %v; want Shippy <welcome@shippy.test>", c.From)
			}
			if c.Templates == nil {
				t.Errorf("Templates = nil; want the embedded ones")
			}
		})
	}
}

// SMTP_CA_FILE adds a private CA: TestSMTPMailerSends connects with it, and
// TestSMTPMailerSendsNothingInsecurely shows the certificate refused without.
func TestLoadConfigSMTPCAFile(t *testing.T) {
	_, certPEM := selfSignedCert(t)
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SMTP_URL": "smtps://mail.example.com", "MAIL_FROM": testFrom, "SMTP_CA_FILE": path}
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("LoadConfig(%v) = %v; want nil", env, err)
	}
	if cfg.SMTP.RootCAs == nil {
		t.Errorf("RootCAs = nil; want the system's plus %s", path)
	}
}
