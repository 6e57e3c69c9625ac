package microenv

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseMaxAge reads a retention limit: a Go duration ("168h", "90m") or a
// whole number of days ("7d"); "0" is no limit. The error names the
// variable.
func ParseMaxAge(name, v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "0" {
		return 0, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, aerr := strconv.Atoi(days)
		if aerr != nil || n < 0 || n > 100*365 {
			err = fmt.Errorf("bad days")
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration such as 168h or 7d, or 0 for no limit", name, v)
	}
	if d > 0 && d < time.Minute {
		return 0, fmt.Errorf("%s=%q: want at least 1m (or 0 for no limit)", name, v)
	}
	return d, nil
}

// byteUnits are the suffixes ParseMaxBytes knows, longest first.
var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseMaxBytes reads a size limit: a whole number of bytes, or one with a
// unit (KiB, MiB, GiB, TiB: powers of 1024; KB, MB, GB, TB: of 1000), such
// as 1GiB or 512MiB; "0" is no limit. The error names the variable.
func ParseMaxBytes(name, v string) (int64, error) {
	s := strings.TrimSpace(v)
	factor := int64(1)
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, factor = strings.TrimSpace(n), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/factor {
		return 0, fmt.Errorf("%s=%q: want a size such as 1GiB, 512MiB or 1000000 (bytes), or 0 for no limit", name, v)
	}
	b := n * factor
	if b > 0 && b < 1<<20 {
		return 0, fmt.Errorf("%s=%q: want at least 1MiB (or 0 for no limit)", name, v)
	}
	return b, nil
}
