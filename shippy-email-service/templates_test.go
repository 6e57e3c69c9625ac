package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEmbeddedTemplates(t *testing.T) {
	tmpl, err := loadWelcomeTemplates("")
	if err != nil {
		t.Fatalf("loadWelcomeTemplates(\"\") = %v; want nil", err)
	}
	tests := []struct {
		name        string
		data        welcomeData
		wantSubject string
		wantText    []string
		wantHTML    []string
		notInHTML   []string
	}{
		{"plain", welcomeData{Name: "Ewan Valentine", Email: "ewan@example.com", Company: "BBC"},
			"Welcome to Shippy, Ewan Valentine",
			[]string{"Hello Ewan Valentine,", "for BBC", "ewan@example.com"},
			[]string{"Hello Ewan Valentine,", "for BBC", "<strong>ewan@example.com</strong>"}, nil},
		{"no company", welcomeData{Name: "Ewan", Email: "ewan@example.com"},
			"Welcome to Shippy, Ewan",
			[]string{"Your account is ready"}, []string{"Your account is ready"}, nil},
		{"markup in the name", welcomeData{Name: evilName, Email: "ewan@example.com", Company: `"Quotes" & <tags>`},
			"Welcome to Shippy, " + evilName,
			[]string{"Hello " + evilName + ",", `for "Quotes" & <tags>`},
			[]string{"Hello &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co,", "for &#34;Quotes&#34; &amp; &lt;tags&gt;"},
			[]string{"<script>", "<tags>"}},
		{"line breaks in the name", welcomeData{Name: "Eve\r\nBcc: victim@example.com\n", Email: "eve@example.com"},
			"Welcome to Shippy, EveBcc: victim@example.com", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tmpl.render(tt.data)
			if err != nil {
				t.Fatalf("render(%+v) = %v; want nil", tt.data, err)
			}
			if got.Subject != tt.wantSubject {
				t.Errorf("render(%+v).Subject = %q; want %q", tt.data, got.Subject, tt.wantSubject)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(got.Text, w) {
					t.Errorf("render(%+v).Text = %q; want it to hold %q", tt.data, got.Text, w)
				}
			}
			for _, w := range tt.wantHTML {
				if !strings.Contains(got.HTML, w) {
					t.Errorf("render(%+v).HTML = %q; want it to hold %q", tt.data, got.HTML, w)
				}
			}
			for _, w := range tt.notInHTML {
				if strings.Contains(got.HTML, w) {
					t.Errorf("render(%+v).HTML = %q; holds %q unescaped", tt.data, got.HTML, w)
				}
			}
		})
	}
}

func TestTemplatesDirectory(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		wantErr     string // the file the error names; "" for success
		wantSubject string
		wantHTML    string
	}{
		{"one file replaced, the others embedded",
			map[string]string{"welcome.subject.tmpl": "Hi {{.Name}} from {{.Company}}", "README.md": "not a template"},
			"", "Hi Ewan from BBC", "<strong>ewan@example.com</strong>"},
		{"all replaced",
			map[string]string{
				"welcome.subject.tmpl": "Ahoy {{.Name}}",
				"welcome.txt.tmpl":     "Ahoy {{.Name}} ({{.UserID}}, {{.EventID}})",
				"welcome.html.tmpl":    "<p>Ahoy {{.Name}}</p>",
			},
			"", "Ahoy Ewan", "<p>Ahoy Ewan</p>"},
		{"does not parse", map[string]string{"welcome.html.tmpl": "<p>{{.Name</p>"}, "welcome.html.tmpl", "", ""},
		{"unknown field", map[string]string{"welcome.txt.tmpl": "Hello {{.Password}}"}, "welcome.txt.tmpl", "", ""},
		{"empty subject", map[string]string{"welcome.subject.tmpl": "{{/* nothing */}}\n"}, "welcome.subject.tmpl", "", ""},
		{"unknown name", map[string]string{"welcome.htm.tmpl": "<p>{{.Name}}</p>"}, "welcome.htm.tmpl", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// Through LoadConfig, as an operator meets it.
			env := map[string]string{"SMTP_URL": "smtp://mail.example.com", "MAIL_FROM": testFrom, "MAIL_TEMPLATES_DIR": dir}
			cfg, err := LoadConfig(func(k string) string { return env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), "MAIL_TEMPLATES_DIR") || !strings.Contains(err.Error(), filepath.Join(dir, tt.wantErr)) {
					t.Errorf("LoadConfig with %v = %v; want an error naming MAIL_TEMPLATES_DIR and %s", tt.files, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig with %v = %v; want nil", tt.files, err)
			}
			got, err := cfg.SMTP.Templates.render(welcomeData{Name: "Ewan", Email: "ewan@example.com", Company: "BBC", UserID: "u-1", EventID: "ev-1"})
			if err != nil {
				t.Fatalf("render = %v; want nil", err)
			}
			if got.Subject != tt.wantSubject || !strings.Contains(got.HTML, tt.wantHTML) {
				t.Errorf("render = subject %q, HTML %q; want %q and HTML holding %q", got.Subject, got.HTML, tt.wantSubject, tt.wantHTML)
			}
		})
	}
}
