// Command shippy-email-service (go.micro.srv.email) subscribes to
// user.created and sends each new user a welcome email.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shippy/shippy/internal/healthcheck"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natslog"
	"github.com/shippy/shippy/internal/servicelog"
)

const serviceName = "go.micro.srv.email"

func main() {
	// Container images have no shell: `shippy-email-service healthcheck` is the probe.
	if healthcheck.Requested(os.Args) {
		os.Exit(healthcheck.Main(defaultMetricsAddress))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		servicelog.Exit(serviceName, err) // one log line, in LOG_FORMAT
	}
}

func run(ctx context.Context) error {
	cfg, err := LoadConfig(os.Getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := servicelog.New(os.Stderr, cfg.LogFormat, cfg.LogLevel, serviceName)
	// Libraries that log on their own (slog.Default, the log package,
	// go-micro) write through it too: one stream, one format.
	slog.SetDefault(log)
	microenv.UseSlog(log)
	ops := newEmailOps(log)
	mailer, closeMailer, err := newMailer(ctx, cfg, log, ops)
	if err != nil {
		return err
	}
	defer closeMailer()
	handler := NewHandler(mailer, log).WithConcurrency(cfg.Concurrency).WithRetry(cfg.RetryBackoff)

	plugins, err := cfg.Micro.Plugins(microenv.Logger(log))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ops.watchBroker(plugins.Broker)
	srv, err := newEmailService(cfg.Micro, plugins, handler, cfg.Queue)
	if err != nil {
		return err
	}
	// The ops server starts before the go-micro server and stops after it.
	stopOps, err := ops.server.Run(ctx, cfg.MetricsAddress)
	if err != nil {
		return err
	}
	defer stopOps()
	log.Info("email-service starting", slog.String("queue", cfg.Queue), slog.Bool("shared_sent_log", cfg.SentNATS != ""))
	if err := srv.start(); err != nil {
		srv.waitHandlersDone()
		return err
	}
	// make up waits for this line before it returns.
	log.Info("serving")
	<-ctx.Done()
	log.Info("stopping: no new event, then the emails being sent")
	return srv.stop() // before the deferred closeMailer
}

// newMailer returns the SMTP mailer (SMTP_URL set) or the logging one
// behind a dedupMailer, whose sent log is the JetStream key-value bucket when
// the broker is JetStream (durable, redelivering, shared by the replicas) and
// memory otherwise; close releases its connection. ops (nil in tests) counts
// the sends and checks the bucket.
func newMailer(ctx context.Context, cfg Config, log *slog.Logger, ops *emailOps) (Mailer, func(), error) {
	var send Mailer = NewLogMailer(os.Stdout, log)
	if cfg.SMTP != nil {
		smtp, err := NewSMTPMailer(*cfg.SMTP, os.Stdout, log)
		if err != nil {
			return nil, nil, err
		}
		send = smtp
		// SMTPConfig's LogValue redacts the password.
		log.Info("sending email through SMTP", slog.Any("smtp", cfg.SMTP))
	}
	send = ops.countSends(send)
	if cfg.SentNATS == "" {
		sent := newMemorySentLog(defaultMemorySentIDs, cfg.SendLease)
		return newDedupMailer(send, sent, cfg.SendLease, log), func() {}, nil
	}
	bucket := kvBucket{Name: cfg.SentBucket, MaxAge: cfg.SentMaxAge, MaxBytes: cfg.SentMaxBytes, Replicas: cfg.Micro.JetStream.Replicas}
	nopts := append(natslog.Options(log.With("component", "sent-log")), cfg.Micro.NATSOptions()...)
	sent, closeNATS, err := dialKVSentLog(ctx, log, cfg.SentNATS, bucket, cfg.SendLease, nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("sent log: %w", err)
	}
	ops.checkSentLog(sent)
	return newDedupMailer(send, sent, cfg.SendLease, log), closeNATS, nil
}
