package microenv

import (
	"context"
	"fmt"
	"log/slog"

	"go-micro.dev/v6/logger"
)

// UseSlog sends go-micro's own log lines (registry, broker, transport) to log,
// so a service writes one format, one event per line, instead of go-micro's
// text lines between its JSON ones. Call it before NewService: go-micro's
// parts take logger.DefaultLogger when they are built.
func UseSlog(log *slog.Logger) {
	l := &slogLogger{log: log}
	logger.DefaultLogger = l
	logger.DefaultHelper = logger.NewHelper(l)
}

// slogLogger is go-micro's logger.Logger on top of a *slog.Logger; the slog
// handler decides which levels are written.
type slogLogger struct {
	log  *slog.Logger
	opts logger.Options
}

func (l *slogLogger) Init(opts ...logger.Option) error {
	for _, o := range opts {
		o(&l.opts)
	}
	return nil
}

// Options reports the lowest level the slog handler writes, because go-micro
// checks it (logger.V) before building some messages.
func (l *slogLogger) Options() logger.Options {
	o := l.opts
	o.Level = logger.FatalLevel
	for _, lv := range []logger.Level{logger.TraceLevel, logger.DebugLevel, logger.InfoLevel, logger.WarnLevel, logger.ErrorLevel} {
		if l.log.Enabled(context.Background(), lv.ToSlog()) {
			o.Level = lv
			break
		}
	}
	return o
}

func (l *slogLogger) Fields(fields map[string]interface{}) logger.Logger {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return &slogLogger{log: l.log.With(args...), opts: l.opts}
}

func (l *slogLogger) Log(level logger.Level, v ...interface{}) {
	l.log.Log(context.Background(), level.ToSlog(), fmt.Sprint(v...), "source", "go-micro")
}

func (l *slogLogger) Logf(level logger.Level, format string, v ...interface{}) {
	l.log.Log(context.Background(), level.ToSlog(), fmt.Sprintf(format, v...), "source", "go-micro")
}

func (l *slogLogger) String() string { return "slog" }
