package jsbroker

import (
	"encoding/json"
	"errors"
	"strings"

	merrors "go-micro.dev/v6/errors"
)

// PermanentErrorID is the go-micro error id that marks a handler's failure
// as permanent: no redelivery can fix it (an SMTP server refused the
// recipient for good, say), so the broker dead-letters the message at once
// instead of retrying it MaxDeliver times.
const PermanentErrorID = "shippy.permanent"

// subscriberErrorPrefix is how go-micro v6.3.10's router starts the detail
// of the error it hands the broker when a subscriber failed
// (server/rpc_router.go, ProcessMessage).
const subscriberErrorPrefix = "subscriber error: "

// permanentError carries its cause for errors.Is/As in the handler's own
// process, and reads as a go-micro error (JSON with PermanentErrorID) so that
// the mark survives go-micro, which passes on only a subscriber error's text.
type permanentError struct {
	err error
}

func (e *permanentError) Error() string {
	return merrors.New(PermanentErrorID, e.err.Error(), 422).Error()
}

func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure no retry can fix. A handler (a plain
// broker.Handler, or a go-micro subscriber through micro.RegisterSubscriber)
// that returns it, possibly wrapped, gets its message dead-lettered at once,
// after this one delivery, with err's text as the reason. Other brokers see
// an ordinary error. Permanent(nil) is nil.
func Permanent(err error) error {
	var p *permanentError
	if err == nil || errors.As(err, &p) {
		return err
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err is, or carries, a Permanent error: directly
// (a plain broker handler's error, wrapped or not), or in the text go-micro
// made of a subscriber's error. go-micro joins the texts of a topic's failed
// handlers with newlines: the message counts as permanently failed only if
// every line carries the mark (so a handler's error text should be one line).
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p *permanentError
	if errors.As(err, &p) {
		return true
	}
	me := merrors.FromError(err)
	if me.Id == PermanentErrorID {
		return true
	}
	details, ok := strings.CutPrefix(me.Detail, subscriberErrorPrefix)
	if !ok {
		return false
	}
	for _, line := range strings.Split(details, "\n") {
		if _, _, _, ok := findPermanent(line); !ok {
			return false
		}
	}
	return true
}

// permanentMark is how the text of a Permanent error starts: go-micro's
// error as JSON, its id first.
var permanentMark = `{"id":"` + PermanentErrorID + `"`

// findPermanent finds the text of a Permanent error in line, where a
// handler may have wrapped it (fmt.Errorf("send: %w", Permanent(err))):
// it returns where that text starts and ends, and the cause's text.
func findPermanent(line string) (start, end int, detail string, ok bool) {
	start = strings.Index(line, permanentMark)
	if start < 0 {
		return 0, 0, "", false
	}
	dec := json.NewDecoder(strings.NewReader(line[start:]))
	var me merrors.Error
	if err := dec.Decode(&me); err != nil || me.Id != PermanentErrorID {
		return 0, 0, "", false
	}
	return start, start + int(dec.InputOffset()), me.Detail, true
}

// readableReason is the text of a handler's error for the dead letter.
// go-micro's subscriber path returns a handler's error as a go-micro error,
// whose text is JSON ({"id":"go.micro.server","code":500,"detail":
// "subscriber error: ..."}); its Detail is what an operator wants to read,
// with a handler's own go-micro error (Permanent's, say) reduced to its
// Detail too. Any other error's text is kept as it is.
func readableReason(err error) string {
	var p *permanentError
	if errors.As(err, &p) {
		return strings.Replace(err.Error(), p.Error(), p.err.Error(), 1)
	}
	d := merrors.FromError(err).Detail
	if d == "" {
		return err.Error()
	}
	details, ok := strings.CutPrefix(d, subscriberErrorPrefix)
	if !ok {
		return d
	}
	lines := strings.Split(details, "\n")
	for i, line := range lines {
		if start, end, detail, ok := findPermanent(line); ok {
			lines[i] = line[:start] + detail + line[end:]
		} else if me := merrors.Parse(line); me.Id != "" && me.Detail != "" {
			lines[i] = me.Detail
		}
	}
	return subscriberErrorPrefix + strings.Join(lines, "\n")
}
