package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"strconv"
	"strings"

	gomail "github.com/wneessen/go-mail"

	"github.com/shippy/shippy/internal/requestid"
)

// headerEventID carries the event id in every welcome email, to find the
// event of a message a user forwards; headerRequestID the id of the request
// that created the user, when the event had one, to find its log lines.
const (
	headerEventID   = "X-Shippy-Event-Id"
	headerRequestID = requestid.Header
)

// errNoSTARTTLS names the configuration error behind go-mail's "does not
// support STARTTLS": it is retried like any passing failure (a server being
// reconfigured may offer it again) and dead-lettered with this reason.
var errNoSTARTTLS = errors.New("the SMTP server does not offer STARTTLS, which SMTP_URL requires (?starttls=opportunistic or none only on a trusted network)")

// SMTPMailer sends the welcome email through an SMTP server with go-mail:
// an HTML part and a plain-text part rendered from the templates, from
// MAIL_FROM to the user, one connection per email.
//
// A 5xx reply to MAIL FROM, RCPT TO or DATA is permanent (errPermanent);
// anything else (4xx replies, connection refused, timeouts, TLS and AUTH
// failures) is temporary, for the broker to retry.
type SMTPMailer struct {
	cfg    SMTPConfig
	tls    *tls.Config
	report sentReport
	log    *slog.Logger
}

// NewSMTPMailer returns a mailer for cfg that reports each email sent as the
// LogMailer does (the tutorial's line on out, "welcome email sent" on log).
func NewSMTPMailer(cfg SMTPConfig, out io.Writer, log *slog.Logger) (*SMTPMailer, error) {
	if cfg.Templates == nil || cfg.From == nil {
		return nil, errors.New("smtp mailer: templates and sender are required")
	}
	m := &SMTPMailer{
		cfg:    cfg,
		tls:    &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		report: sentReport{out: out, log: log},
		log:    log,
	}
	// go-mail checks its options when a client is made: once now, so that
	// a bad one stops the start rather than every send.
	var conns connWatch
	if _, err := m.client(context.Background(), &conns); err != nil {
		return nil, fmt.Errorf("smtp mailer: %w", err)
	}
	return m, nil
}

// Send renders and sends e's welcome email within ctx.
func (m *SMTPMailer) Send(ctx context.Context, e WelcomeEmail) error {
	msg, err := m.message(e)
	if err != nil {
		return err
	}
	var conns connWatch
	defer conns.stop()
	client, err := m.client(ctx, &conns)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	err = client.DialAndSendWithContext(ctx, msg)
	if err != nil && !msg.IsDelivered() {
		return m.classify(ctx, err)
	}
	// Delivered: an error can only come from the RSET or QUIT after the
	// server accepted the message, and returning it would send it again.
	if err != nil {
		m.log.WarnContext(ctx, "welcome email delivered; the SMTP session then failed",
			slog.String("event_id", e.EventID), slog.Any("error", err))
	}
	if err := m.report.report(ctx, e, slog.String("message_id", msg.GetMessageID())); err != nil {
		m.log.WarnContext(ctx, "welcome email delivered; reporting it failed",
			slog.String("event_id", e.EventID), slog.Any("error", err))
	}
	return nil
}

// message builds e's email. What no retry can fix (a recipient that is not
// an address, a template failing on this user's data) is errPermanent.
func (m *SMTPMailer) message(e WelcomeEmail) (*gomail.Msg, error) {
	to, err := mail.ParseAddress(e.Email)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient %q: %v", errPermanent, e.Email, err)
	}
	body, err := m.cfg.Templates.render(welcomeData{
		Name: e.Name, Email: to.Address, Company: e.Company, UserID: e.UserID, EventID: e.EventID,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: render welcome email: %w", errPermanent, err)
	}
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(m.cfg.From)
	msg.ToMailAddress(&mail.Address{Name: oneLine(e.Name), Address: to.Address})
	msg.Subject(body.Subject) // one line: render drops CR and LF
	msg.SetMessageIDWithValue(messageID(e.EventID, m.cfg.From.Address))
	msg.SetGenHeader(headerEventID, oneLine(e.EventID))
	if requestid.Valid(e.RequestID) {
		msg.SetGenHeader(headerRequestID, e.RequestID)
	}
	msg.SetDate()
	msg.SetBodyString(gomail.TypeTextPlain, body.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, body.HTML)
	return msg, nil
}

// messageID is the same for every send of one event, so that the second
// email of the at-least-once window (see sentLog) can be recognised as a
// duplicate by the receiving side. The event id is mapped as for the sent
// log's keys: ids that are not plain (they come off the wire) are hashed.
func messageID(eventID, from string) string {
	domain := "shippy.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i < len(from)-1 {
		domain = from[i+1:]
	}
	return "welcome." + kvKey(eventID) + "@" + domain
}

// client is a go-mail client for one send within ctx.
func (m *SMTPMailer) client(ctx context.Context, conns *connWatch) (*gomail.Client, error) {
	opts := []gomail.Option{
		gomail.WithPort(m.cfg.Port),
		gomail.WithTimeout(m.cfg.Timeout),
		gomail.WithTLSConfig(m.tls),
		gomail.WithDialContextFunc(conns.dialer(ctx, m.cfg.Security == implicitTLS, m.tls)),
	}
	switch m.cfg.Security {
	case startTLSRequired:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case startTLSOpportunistic:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case startTLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case implicitTLS:
		// The dialer does the TLS handshake; WithSSL keeps go-mail from
		// trying STARTTLS on top of it.
		opts = append(opts, gomail.WithSSL())
	}
	if m.cfg.Username != "" {
		// The first of these the server offers; go-mail's PLAIN and LOGIN
		// refuse a connection without TLS (except to localhost).
		opts = append(opts,
			gomail.WithUsername(m.cfg.Username),
			gomail.WithPassword(m.cfg.password),
			gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthPlain, gomail.SMTPAuthLogin))
	}
	return gomail.NewClient(m.cfg.Host, opts...)
}

// classify wraps a failed send's error: errPermanent for a 5xx reply to the
// sender, the recipient or the message; a temporary error otherwise.
func (m *SMTPMailer) classify(ctx context.Context, err error) error {
	server := net.JoinHostPort(m.cfg.Host, strconv.Itoa(m.cfg.Port))
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("smtp %s: %w (%v)", server, ctxErr, err)
	}
	var se *gomail.SendError
	if errors.As(err, &se) && se.ErrorCode() >= 500 && se.ErrorCode() < 600 {
		switch se.Reason {
		case gomail.ErrSMTPMailFrom, gomail.ErrSMTPRcptTo, gomail.ErrSMTPData, gomail.ErrSMTPDataClose:
			return fmt.Errorf("%w: smtp %s: %w", errPermanent, server, err)
		}
	}
	// go-mail v0.8.1 has no error value for it, only this text (the SMTP
	// tests pin it).
	if strings.Contains(err.Error(), "does not support STARTTLS") {
		return fmt.Errorf("smtp %s: %w: %w", server, errNoSTARTTLS, err)
	}
	return fmt.Errorf("smtp %s: %w", server, err)
}

// connWatch closes a send's connections when the send's context ends.
// go-mail bounds the dial by the context but the SMTP conversation only by
// its timeout, per phase; closing the connection bounds the whole send by
// the context, which the dedupMailer gives half the send lease.
type connWatch struct {
	stops []func() bool
}

func (w *connWatch) dialer(ctx context.Context, implicitTLS bool, cfg *tls.Config) gomail.DialContextFunc {
	return func(dialCtx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		w.stops = append(w.stops, context.AfterFunc(ctx, func() { _ = conn.Close() }))
		if !implicitTLS {
			return conn, nil
		}
		// A *tls.Conn tells go-mail's AUTH that the connection is encrypted.
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(dialCtx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}
}

func (w *connWatch) stop() {
	for _, stop := range w.stops {
		stop()
	}
}
