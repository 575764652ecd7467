package rest

import (
	"fmt"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes the REST seeds put on sizes, binary as istgt
// and NAS boxes read them (10MB is 10 MiB).
var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"TB", 40}, {"GB", 30}, {"MB", 20}, {"KB", 10}, {"B", 0}}

// ParseSize reads "10MB", "1073741824" or "0" (auto: the size of an
// existing file) into bytes.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	shift := uint(0)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(t, u.suffix); ok {
			t, shift = strings.TrimSpace(n), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: use bytes or a number with KB, MB, GB or TB", s)
	}
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

// FormatSize writes bytes with the largest unit that divides them, so
// that what a client sent ("10MB") comes back the same.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits[:4] {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
