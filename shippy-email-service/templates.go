package main

import (
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	texttemplate "text/template"
)

// The welcome email's templates, by file name: the subject and the plain-text
// part are text/template, the HTML part html/template (which escapes the
// data for HTML). MAIL_TEMPLATES_DIR may hold files of these names that
// replace the embedded ones.
const (
	subjectTemplateName = "welcome.subject.tmpl"
	textTemplateName    = "welcome.txt.tmpl"
	htmlTemplateName    = "welcome.html.tmpl"
)

var templateNames = []string{subjectTemplateName, textTemplateName, htmlTemplateName}

//go:embed templates/*.tmpl
var embeddedTemplates embed.FS

// welcomeData is what the templates see: {{.Name}}, {{.Email}},
// {{.Company}} (may be empty), {{.UserID}} and {{.EventID}}.
type welcomeData struct {
	Name    string
	Email   string
	Company string
	UserID  string
	EventID string
}

// sampleWelcomeData renders every template once at start, so that a template
// that fails on real data is refused before the first event.
var sampleWelcomeData = welcomeData{
	Name:    `Ewan "E" <Valentine> & Co`,
	Email:   "ewan@example.com",
	Company: "Shippy",
	UserID:  "00000000-0000-0000-0000-000000000001",
	EventID: "00000000-0000-0000-0000-000000000002",
}

// welcomeTemplates are the parsed templates of the welcome email.
type welcomeTemplates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
	// overridden lists the files taken from MAIL_TEMPLATES_DIR, for the log.
	overridden []string
}

// welcomeMessage is one rendered welcome email.
type welcomeMessage struct {
	Subject string // one line
	Text    string
	HTML    string
}

// loadWelcomeTemplates parses the embedded templates, each replaced by the
// file of the same name in dir if dir is not empty and has one, and renders
// them once with sample data. Errors name the file. A *.tmpl file in dir
// with another name is refused: it would be ignored, most likely a typo.
func loadWelcomeTemplates(dir string) (*welcomeTemplates, error) {
	sources := map[string]string{}
	for _, name := range templateNames {
		b, err := embeddedTemplates.ReadFile("templates/" + name)
		if err != nil {
			return nil, fmt.Errorf("embedded template %s: %w", name, err)
		}
		sources[name] = string(b)
	}
	paths := map[string]string{} // where each template came from
	for _, name := range templateNames {
		paths[name] = "embedded " + name
	}
	t := &welcomeTemplates{}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read templates directory: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".tmpl") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if _, known := sources[e.Name()]; !known {
				return nil, fmt.Errorf("%s: unknown template name; want %s", path, strings.Join(templateNames, ", "))
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			sources[e.Name()], paths[e.Name()] = string(b), path
			t.overridden = append(t.overridden, path)
		}
	}

	var err error
	if t.subject, err = texttemplate.New(subjectTemplateName).Option("missingkey=error").Parse(sources[subjectTemplateName]); err != nil {
		return nil, fmt.Errorf("%s: %w", paths[subjectTemplateName], err)
	}
	if t.text, err = texttemplate.New(textTemplateName).Option("missingkey=error").Parse(sources[textTemplateName]); err != nil {
		return nil, fmt.Errorf("%s: %w", paths[textTemplateName], err)
	}
	if t.html, err = htmltemplate.New(htmlTemplateName).Option("missingkey=error").Parse(sources[htmlTemplateName]); err != nil {
		return nil, fmt.Errorf("%s: %w", paths[htmlTemplateName], err)
	}
	if _, err := t.render(sampleWelcomeData); err != nil {
		var re *renderError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("%s: with sample data: %w", paths[re.template], re.err)
		}
		return nil, err
	}
	return t, nil
}

// renderError says which template failed.
type renderError struct {
	template string
	err      error
}

func (e *renderError) Error() string { return e.template + ": " + e.err.Error() }
func (e *renderError) Unwrap() error { return e.err }

// render executes the three templates with d. The subject is made one line
// (control characters, CR and LF among them, are dropped), so that no data
// can add a header; an empty subject or part is an error.
func (t *welcomeTemplates) render(d welcomeData) (welcomeMessage, error) {
	subject, err := execute(subjectTemplateName, t.subject, d)
	if err != nil {
		return welcomeMessage{}, err
	}
	text, err := execute(textTemplateName, t.text, d)
	if err != nil {
		return welcomeMessage{}, err
	}
	html, err := execute(htmlTemplateName, t.html, d)
	if err != nil {
		return welcomeMessage{}, err
	}
	return welcomeMessage{Subject: strings.TrimSpace(oneLine(subject)), Text: text, HTML: html}, nil
}

// template is what text/template and html/template have in common.
type template interface {
	Execute(w io.Writer, data any) error
}

func execute(name string, tmpl template, d welcomeData) (string, error) {
	var b strings.Builder
	if err := tmpl.Execute(&b, d); err != nil {
		return "", &renderError{template: name, err: err}
	}
	// Control characters only (a subject of "\n") count as nothing too.
	if strings.TrimSpace(oneLine(b.String())) == "" {
		return "", &renderError{template: name, err: errors.New("renders to nothing")}
	}
	return b.String(), nil
}
