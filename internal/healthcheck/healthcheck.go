// Package healthcheck lets a service binary check itself: `shippy-user-service
// healthcheck` exits 0 when the service is ready, that is when its ops
// server (METRICS_ADDRESS) answers 200 on /readyz: the service serves, and
// its database and broker are reachable. Container images have no shell or
// curl, so the binary is its own probe. With METRICS_ADDRESS=off it can only
// check that the RPC server accepts connections (MICRO_SERVER_ADDRESS).
package healthcheck

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shippy/shippy/internal/opshttp"
)

// Requested reports whether the program was started as `<binary> healthcheck`.
func Requested(args []string) bool {
	return len(args) == 2 && args[1] == "healthcheck"
}

// localHost is where a host-less or wildcard listen address is dialled.
func localHost(host string) string {
	if host == "" || host == "0.0.0.0" || host == "::" || host == "[::]" {
		return "127.0.0.1"
	}
	return host
}

// Check dials the RPC server at the address go-micro listens on
// (MICRO_SERVER_ADDRESS); a host-less address such as ":8080" is dialled on
// the loopback interface.
func Check(serverAddress string, timeout time.Duration) error {
	if serverAddress == "" {
		return fmt.Errorf("MICRO_SERVER_ADDRESS is not set: a random port cannot be checked")
	}
	host, port, err := net.SplitHostPort(serverAddress)
	if err != nil {
		return fmt.Errorf("MICRO_SERVER_ADDRESS=%q: %w", serverAddress, err)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(localHost(host), port), timeout)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	return conn.Close()
}

// CheckReady asks the ops server listening on metricsAddress for /readyz
// and returns nil on 200; otherwise the error holds the answer's body,
// which names the failed checks.
func CheckReady(metricsAddress string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(metricsAddress)
	if err != nil {
		return fmt.Errorf("METRICS_ADDRESS=%q: %w", metricsAddress, err)
	}
	if port == "0" {
		return fmt.Errorf("METRICS_ADDRESS=%q: a random port cannot be checked", metricsAddress)
	}
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get("http://" + net.JoinHostPort(localHost(host), port) + "/readyz")
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /readyz answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Main runs the check for a main function and returns the exit code.
// defaultMetricsAddress is the program's METRICS_ADDRESS default.
func Main(defaultMetricsAddress string) int {
	if err := check(os.Getenv, defaultMetricsAddress); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func check(getenv func(string) string, defaultMetricsAddress string) error {
	addr, err := opshttp.ParseAddress("METRICS_ADDRESS", getenv("METRICS_ADDRESS"), defaultMetricsAddress)
	if err != nil {
		return err
	}
	if addr == "" {
		return Check(getenv("MICRO_SERVER_ADDRESS"), 2*time.Second)
	}
	return CheckReady(addr, 2*time.Second)
}
