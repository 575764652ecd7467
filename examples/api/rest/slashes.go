package rest

import (
	"net/http"
	"strings"
)

// CollapseSlashes serves every path with its runs of slashes read as one
// slash ("/a//b/" as "/a/b/"), where http.ServeMux would answer a redirect
// that clients building URLs by concatenation (the FreeNAS Cinder
// driver's "targetgroup//") do not follow for a POST. Only repeated
// slashes are rewritten: "." and ".." segments still get ServeMux's
// redirect.
func CollapseSlashes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "//") {
			h.ServeHTTP(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = collapse(r.URL.Path)
		if r.URL.RawPath != "" {
			r2.URL.RawPath = collapse(r.URL.RawPath)
		}
		h.ServeHTTP(w, r2)
	})
}

// collapse replaces each run of slashes in p with one slash.
func collapse(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
