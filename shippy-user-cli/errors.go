package main

import (
	"errors"
	"fmt"
	"strings"

	merrors "go-micro.dev/v6/errors"
)

// clientErrorID is the id go-micro's client puts on errors it raises itself
// (service not in the registry, connection refused, timeout), as opposed to
// errors the user-service returned.
const clientErrorID = "go.micro.client"

// classify maps an error to an exit code and the message for stderr.
func classify(err error) (int, string) {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.msg
	}
	prefix, merr := microError(err)
	code, msg := classifyMicro(merr, err)
	return code, prefix + msg
}

// microError finds the go-micro error in err's chain. Server errors arrive
// as a JSON string in an unexported type, so each link is parsed. prefix is
// the context wrapped around it ("create sample user: ").
func microError(err error) (prefix string, merr *merrors.Error) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if m, ok := e.(*merrors.Error); ok && m != nil {
			return strings.TrimSuffix(err.Error(), e.Error()), m
		}
		if m := merrors.Parse(e.Error()); m.Code != 0 || m.Id != "" {
			return strings.TrimSuffix(err.Error(), e.Error()), m
		}
	}
	return "", merrors.FromError(err)
}

func classifyMicro(merr *merrors.Error, err error) (int, string) {
	detail := merr.Detail
	if detail == "" {
		detail = merr.Status
	}
	if detail == "" {
		detail = err.Error()
	}
	switch {
	// go-micro's own client errors carry 408 or 500 whatever went wrong;
	// the code would suggest the service answered, so it is left out.
	case merr.Id == clientErrorID && merr.Code == 408:
		return exitUnavailable, fmt.Sprintf("no answer from %s: %s", serviceName, detail)
	case merr.Id == clientErrorID && strings.HasSuffix(detail, "not found"):
		return exitUnavailable, fmt.Sprintf("%s is not in the registry: is the user-service running, with the same MICRO_REGISTRY and MICRO_REGISTRY_ADDRESS?", serviceName)
	case merr.Id == clientErrorID:
		return exitUnavailable, fmt.Sprintf("cannot reach %s: %s", serviceName, detail)
	case merr.Code == 408:
		return exitUnavailable, fmt.Sprintf("%s (408)", detail)
	case merr.Code >= 400 && merr.Code < 500:
		return exitRejected, fmt.Sprintf("%s (%d)", detail, merr.Code)
	case merr.Code >= 500:
		return exitUnavailable, fmt.Sprintf("user-service failed: %s (%d)", detail, merr.Code)
	default:
		return exitUnavailable, detail
	}
}
