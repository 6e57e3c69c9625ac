// Command inboxcheck opens Mailpit's web inbox in headless Chromium, as a
// developer would, finds the welcome email to a user by name in the message
// list, opens it, finds the name in the email's body, and saves a screenshot
// of the open email. It exits 1 when any of that is missing, 2 on bad flags.
// scripts/compose-test.sh runs it against the compose stack's Mailpit.
//
//	inboxcheck --url http://127.0.0.1:8025 --name 'Ewan Valentine' --screenshot out.png
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chromedp/chromedp"
)

type config struct {
	url, name, screenshot, chromium string
	timeout                         time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "inboxcheck:", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "inboxcheck:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("inboxcheck", flag.ContinueOnError)
	var c config
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8025", "Mailpit's web UI")
	fs.StringVar(&c.name, "name", "", "the user's name, as in the welcome email (required)")
	fs.StringVar(&c.screenshot, "screenshot", "", "where to save a PNG of the open email (optional)")
	fs.StringVar(&c.chromium, "chromium", envOr("CHROMIUM", "/usr/bin/chromium"), "the Chromium binary (Debian's package chromium)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "bound for the whole check")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if strings.TrimSpace(c.name) == "" {
		return c, errors.New("--name is required")
	}
	if _, err := os.Stat(c.chromium); err != nil {
		return c, fmt.Errorf("chromium: %w (apt-get install chromium, or --chromium PATH)", err)
	}
	return c, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, c config) error {
	// The waits end at the deadline; the browser lives 10 s longer, so a
	// failure can still say what the page showed.
	deadline := time.Now().Add(c.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(10*time.Second))
	defer cancel()
	profile, err := os.MkdirTemp("", "inboxcheck-chromium-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	// As root on a machine with no route out: no sandbox, and nothing that
	// dials Google's hosts in the background (those dials are refused and
	// slow Chromium down).
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(c.chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 800),
	)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()

	if err := chromedp.Do(tab, chromedp.Navigate(c.url)); err != nil {
		return fmt.Errorf("open %s: %w", c.url, err)
	}
	// The list: exactly one message row naming the user.
	var rows []string
	err = poll(tab, deadline, func() (ok bool, err error) {
		rows, err = chromedp.Run(tab, chromedp.Evaluate[[]string](rowsNaming(c.name)))
		return len(rows) > 0, err
	})
	if err != nil {
		all, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText`))
		return fmt.Errorf("no message naming %q in the inbox at %s (%v); the page shows:\n%s", c.name, c.url, err, all)
	}
	if len(rows) != 1 {
		return fmt.Errorf("%d messages name %q in the inbox; want 1", len(rows), c.name)
	}
	fmt.Printf("inbox lists the welcome email to %s (message %s)\n", c.name, rows[0])

	// The email, opened: its HTML body (an iframe) greets the user by name.
	// A mouse click on the row, as a person would (an attribute selector:
	// Mailpit's ids may start with a digit, which "#id" does not allow).
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(fmt.Sprintf("[id=%q]", rows[0])))); err != nil {
		return fmt.Errorf("open message %s: %w", rows[0], err)
	}
	var body string
	err = poll(tab, deadline, func() (ok bool, err error) {
		body, err = chromedp.Run(tab, chromedp.Evaluate[string](previewText))
		return strings.Contains(body, c.name), err
	})
	if err != nil {
		return fmt.Errorf("message %s opened, but its body does not name %q (%v); body:\n%s", rows[0], c.name, err, body)
	}
	fmt.Printf("the opened email's body names %s: %q\n", c.name, firstLine(body))

	if c.screenshot != "" {
		png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
		if err != nil {
			return fmt.Errorf("screenshot: %w", err)
		}
		if err := os.WriteFile(c.screenshot, png, 0o644); err != nil {
			return err
		}
		fmt.Printf("screenshot: %s (%d bytes)\n", c.screenshot, len(png))
	}
	return nil
}

// rowsNaming is JavaScript returning the ids of Mailpit's message rows
// whose text (sender, recipient, subject, snippet) holds name.
func rowsNaming(name string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('[data-testid="message-row"]')]
		.filter(r => r.innerText.includes(%q)).map(r => r.id)`, name)
}

// previewText is JavaScript returning the text of the open message's HTML
// preview: an iframe Mailpit fills with the sanitised HTML (same origin).
const previewText = `(() => {
	const f = document.getElementById("preview-html");
	return (f && f.contentDocument && f.contentDocument.body) ? f.contentDocument.body.innerText : "";
})()`

// poll calls cond every 200 ms until it holds, or fails at the deadline.
func poll(ctx context.Context, deadline time.Time, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not found in time (last error: %v)", last)
			}
			return errors.New("not found in time")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
