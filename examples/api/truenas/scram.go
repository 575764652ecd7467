package truenas

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// scramNonceSize is the size of each half of a SCRAM nonce, as
// truenas_api_client sends and expects it.
const scramNonceSize = 32

// scramExchange is a SCRAM-SHA-512 login between its first and final
// client messages (RFC 5802), as auth.login_ex runs it: the user name
// carries the API key id ("n=admin:3").
type scramExchange struct {
	key             APIKey
	gs2Header       string // "n,," or "p=tls-server-end-point,,"
	clientFirstBare string
	serverFirst     string
	nonce           string // the combined nonce, base64
}

var errScram = errors.New("malformed SCRAM message")

// scramFirst answers a client-first message: it finds the key the user
// name names and returns the exchange and the server-first message. A
// key that does not exist gets an exchange all the same (decoyKey).
func scramFirst(a *Accounts, msg string) (*scramExchange, error) {
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return nil, errScram
	}
	authz, bare, ok := strings.Cut(rest, ",")
	if !ok || authz != "" {
		return nil, errScram
	}
	switch {
	case flag == "n", flag == "y", flag == "p=tls-server-end-point":
	default:
		return nil, errScram
	}
	var user, nonce string
	for _, attr := range strings.Split(bare, ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "n":
			user = v
		case "r":
			nonce = v
		}
	}
	raw, err := base64.StdEncoding.DecodeString(nonce)
	if err != nil || len(raw) != scramNonceSize || user == "" {
		return nil, errScram
	}
	name, idText, ok := cutLast(user, ":")
	id, err := strconv.Atoi(idText)
	if !ok || err != nil {
		return nil, errScram
	}
	if a == nil {
		return nil, nil
	}
	k, ok := a.usable(id, name)
	if !ok {
		// Not told apart from a key that exists: the exchange goes on
		// and fails at its end, as a wrong key does.
		k = a.decoyKey(user)
	}
	server := make([]byte, scramNonceSize)
	rand.Read(server)
	x := &scramExchange{key: k, gs2Header: flag + ",,", clientFirstBare: bare,
		nonce: base64.StdEncoding.EncodeToString(append(raw, server...))}
	x.serverFirst = "r=" + x.nonce + ",s=" + base64.StdEncoding.EncodeToString(k.Salt) + ",i=" + strconv.Itoa(k.Iterations)
	return x, nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// final checks a client-final message; it returns the server-final
// message on success and "" when the proof is wrong. cert is the DER of
// the server's TLS certificate (nil without TLS) for channel binding.
func (x *scramExchange) final(msg string, cert []byte) (string, error) {
	var cb, nonce, proof string
	for _, attr := range strings.Split(msg, ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "c":
			cb = v
		case "r":
			nonce = v
		case "p":
			proof = v // Cut splits at the first '=': base64 padding stays
		}
	}
	if cb == "" || nonce == "" || proof == "" {
		return "", errScram
	}
	wantCB := []byte(x.gs2Header)
	if strings.HasPrefix(x.gs2Header, "p=") {
		if cert == nil {
			return "", errors.New("channel binding asked for on a connection without TLS")
		}
		wantCB = append(wantCB, tlsServerEndPoint(cert)...)
	}
	if cb != base64.StdEncoding.EncodeToString(wantCB) || nonce != x.nonce {
		return "", nil
	}
	p, err := base64.StdEncoding.DecodeString(proof)
	if err != nil || len(p) != sha512.Size {
		return "", errScram
	}
	withoutProof := "c=" + cb + ",r=" + nonce
	authMsg := []byte(x.clientFirstBare + "," + x.serverFirst + "," + withoutProof)
	sig := hmacSHA512(x.key.StoredKey, authMsg)
	clientKey := make([]byte, len(p))
	for i := range p {
		clientKey[i] = p[i] ^ sig[i]
	}
	stored := sha512.Sum512(clientKey)
	if !hmac.Equal(stored[:], x.key.StoredKey) {
		return "", nil
	}
	return "v=" + base64.StdEncoding.EncodeToString(hmacSHA512(x.key.ServerKey, authMsg)), nil
}

// tlsServerEndPoint is RFC 5929's channel binding data: the certificate's
// hash with its signature's hash function, SHA-256 in place of MD5 and
// SHA-1.
func tlsServerEndPoint(der []byte) []byte {
	h := crypto.SHA256
	if c, err := x509.ParseCertificate(der); err == nil {
		switch c.SignatureAlgorithm {
		case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
			h = crypto.SHA384
		case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
			h = crypto.SHA512
		}
	}
	w := h.New()
	w.Write(der)
	return w.Sum(nil)
}
