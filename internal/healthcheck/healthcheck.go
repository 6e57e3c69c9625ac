// Package healthcheck lets a service binary check itself: `shippy-user-service
// healthcheck` exits 0 when the service's RPC server accepts connections.
// Container images have no shell or curl, so the binary is its own probe.
package healthcheck

import (
	"fmt"
	"net"
	"os"
	"time"
)

// Requested reports whether the program was started as `<binary> healthcheck`.
func Requested(args []string) bool {
	return len(args) == 2 && args[1] == "healthcheck"
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
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), timeout)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	return conn.Close()
}

// Main runs the check for a main function and returns the exit code.
func Main() int {
	if err := Check(os.Getenv("MICRO_SERVER_ADDRESS"), 2*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
