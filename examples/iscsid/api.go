package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/iscsikit/iscsikit/examples/api/freenas"
	"github.com/iscsikit/iscsikit/examples/api/nasshares"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/examples/api/storlever"
	"github.com/iscsikit/iscsikit/examples/api/targetd"
	"github.com/iscsikit/iscsikit/examples/api/truenas"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/mgmt"
)

// apiConfig is the management API's part of the command line.
type apiConfig struct {
	addr     string // host:port; empty disables the API
	user     string // HTTP Basic credentials; empty with a loopback addr means none
	password string
	tlsCert  string
	tlsKey   string
	keysFile string // where API keys of the TrueNAS WebSocket APIs are kept
}

// check refuses an API configuration that would expose the management
// API without credentials, or half of a TLS key pair.
func (c apiConfig) check() error {
	if c.addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.addr)
	if err != nil {
		return fmt.Errorf("--api %q: want host:port: %w", c.addr, err)
	}
	if (c.user == "") != (c.password == "") {
		return errors.New("--api-user and --api-password go together")
	}
	if c.user == "" && !isLoopback(host) {
		return fmt.Errorf("--api %s listens beyond loopback: --api-user and --api-password are required", c.addr)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiHandler routes every API dialect served on the one listener.
func apiHandler(m *mgmt.Manager, srv *iscsi.Server, tn *truenas.Server, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	tn.Register(mux)
	// Seed 001 also serves FreeNAS v1.0's volumes and zvols, and answers
	// the rest of /api/v1.0/ with what it does not serve.
	mux.Handle("/api/v1.0/", freenas.Handler(m, sessionLimits(srv.Options()), log))
	mux.Handle(targetd.Path, targetd.Handler(m, targetd.Options{Logger: log}))
	mux.Handle(storlever.Prefix, storlever.Handler(m, log))
	shares := nasshares.Handler(m, log)
	mux.Handle(nasshares.SharesPath, shares)
	mux.Handle(nasshares.ServicePath, shares)
	// Repeated slashes are read as one before routing, rather than
	// answered with ServeMux's redirect (the Cinder driver POSTs to
	// "targetgroup//"). A request a page of another site had a browser
	// send (which keeps the Basic credentials) is refused, whatever the
	// dialect.
	return rest.SameOriginOnly(rest.CollapseSlashes(mux))
}

// sessionLimits reports the server's session parameters in seed 001's
// terms.
func sessionLimits(o iscsi.Options) freenas.SessionLimits {
	n := o.Negotiation
	return freenas.SessionLimits{
		FirstBurst: int(n.FirstBurstLength), MaxBurst: int(n.MaxBurstLength), MaxRecvData: int(n.MaxRecvDataSegmentLength),
		MaxOutstandingR2T: int(n.MaxOutstandingR2T), DefaultTime2Wait: int(n.DefaultTime2Wait), DefaultTime2Keep: int(n.DefaultTime2Retain),
		NopInInterval: int(max(o.NopInterval, 0) / time.Second), IOTimeout: int(o.NopTimeout / time.Second), QueueDepth: o.QueueDepth,
	}
}

// basicAuth admits requests carrying user and password, comparing in
// constant time; others get 401 with a Basic challenge. TrueNAS
// WebSocket upgrades pass: their clients log in inside the connection.
func basicAuth(user, password string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(user + "\x00" + password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if truenas.IsWebSocket(r) {
			next.ServeHTTP(w, r)
			return
		}
		u, p, ok := r.BasicAuth()
		got := sha256.Sum256([]byte(u + "\x00" + p))
		if !ok || subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="iscsid", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// startAPI listens on c.addr and serves the management API until the
// returned stop function is called. The listener is bound before it
// returns, so a taken port is reported at start.
func startAPI(c apiConfig, m *mgmt.Manager, srv *iscsi.Server, log *slog.Logger) (addr net.Addr, stop func(context.Context) error, err error) {
	accounts, err := truenas.OpenAccounts(c.keysFile, c.user, c.password)
	if err != nil {
		return nil, nil, err
	}
	var tlsConf *tls.Config
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var certDER []byte
	if tlsConf != nil {
		certDER = tlsConf.Certificates[0].Certificate[0]
	}
	tn := truenas.New(m, truenas.Options{Accounts: accounts, TLSCert: certDER, FailedLoginDelay: time.Second, Logger: log})
	h := apiHandler(m, srv, tn, log)
	if c.user != "" {
		h = basicAuth(c.user, c.password, h)
	}
	l, err := net.Listen("tcp", c.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--api: %w", err)
	}
	scheme := "http"
	if tlsConf != nil {
		l, scheme = tls.NewListener(l, tlsConf), "https"
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("management API stopped", "err", err)
		}
	}()
	log.Info("management API listening", "url", scheme+"://"+l.Addr().String(), "auth", c.user != "")
	stop = func(ctx context.Context) error {
		err := hs.Shutdown(ctx)
		tn.Close()
		return err
	}
	return l.Addr(), stop, nil
}
