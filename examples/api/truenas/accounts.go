package truenas

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ScramIterations is the PBKDF2-HMAC-SHA512 iteration count of new API
// keys: the bottom of the range truenas_api_client accepts (50000 to
// 5000000) doubled, so a login costs tens of milliseconds.
const ScramIterations = 100000

// ErrNoAccount is returned for an API key naming a user other than the
// account iscsid serves.
var ErrNoAccount = errors.New("no such user")

// APIKey is a stored API key: never the key itself, only the SCRAM
// secrets derived from it (RFC 5802 with SHA-512, as TrueNAS keeps them),
// which verify both API_KEY_PLAIN and SCRAM logins.
type APIKey struct {
	ID         int        `json:"id"`
	Name       string     `json:"name"`
	Username   string     `json:"username"`
	Iterations int        `json:"iterations"`
	Salt       []byte     `json:"salt"`
	StoredKey  []byte     `json:"stored_key"`
	ServerKey  []byte     `json:"server_key"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
}

// keysFile is the JSON document of Accounts.
type keysFile struct {
	NextID int      `json:"next_id"`
	Keys   []APIKey `json:"api_keys"`
}

// Accounts holds who may log in to the WebSocket APIs: one user with a
// password (iscsid's --api-user and --api-password, never stored) and the
// API keys made for that user, kept in a file of mode 0600.
type Accounts struct {
	mu       sync.Mutex
	path     string
	user     string
	password [sha256.Size]byte // sha256 of the password, for constant-time comparison
	file     keysFile
	// decoy salts the SCRAM exchanges of keys that do not exist (see
	// decoyKey); random for each Accounts.
	decoy [32]byte
}

// OpenAccounts reads the API keys at path (none when the file does not
// exist yet) for the account user with password. An empty user means no
// account: logins all fail and sessions start authenticated (iscsid on
// loopback without --api-user).
func OpenAccounts(path, user, password string) (*Accounts, error) {
	a := &Accounts{path: path, user: user, password: sha256.Sum256([]byte(password))}
	rand.Read(a.decoy[:])
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("api keys: %w", err)
	default:
		if err := json.Unmarshal(b, &a.file); err != nil {
			return nil, fmt.Errorf("api keys: %s: %w", path, err)
		}
	}
	return a, nil
}

// Open reports whether there is no account, so that every session starts
// authenticated.
func (a *Accounts) Open() bool { return a == nil || a.user == "" }

// CheckPassword reports whether user and password are the account's.
func (a *Accounts) CheckPassword(user, password string) bool {
	if a.Open() {
		return false
	}
	got := sha256.Sum256([]byte(password))
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(a.user))
	okPass := subtle.ConstantTimeCompare(got[:], a.password[:])
	return okUser&okPass == 1
}

// save writes the file atomically with mode 0600. Callers hold a.mu.
func (a *Accounts) save() error {
	b, err := json.MarshalIndent(&a.file, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(a.path), ".api-keys-*")
	if err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(append(b, '\n'))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), a.path)
	}
	if err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	return nil
}

// CreateKey makes a key named name for username and returns it with the
// raw key ("ID-SECRET"), which is shown this once and never stored.
func (a *Accounts) CreateKey(name, username string, expires *time.Time) (APIKey, string, error) {
	if a.Open() || username != a.user {
		return APIKey{}, "", fmt.Errorf("%w %q: API keys belong to the account %q", ErrNoAccount, username, a.userName())
	}
	secret := rand.Text() + rand.Text() // 52 base32 characters, 260 bits
	k := APIKey{Name: name, Username: username, Iterations: ScramIterations, Salt: make([]byte, 32),
		CreatedAt: time.Now().UTC().Truncate(time.Second), ExpiresAt: expires}
	rand.Read(k.Salt)
	k.StoredKey, k.ServerKey, _ = scramKeys(secret, k.Salt, k.Iterations)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.file.NextID = max(a.file.NextID, 1)
	k.ID = a.file.NextID
	a.file.NextID++
	a.file.Keys = append(a.file.Keys, k)
	if err := a.save(); err != nil {
		a.file.Keys = a.file.Keys[:len(a.file.Keys)-1]
		return APIKey{}, "", err
	}
	return k, strconv.Itoa(k.ID) + "-" + secret, nil
}

func (a *Accounts) userName() string {
	if a == nil {
		return ""
	}
	return a.user
}

// Keys lists the stored keys.
func (a *Accounts) Keys() []APIKey {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.file.Keys)
}

// Key returns the key with id, if any.
func (a *Accounts) Key(id int) (APIKey, bool) {
	if a == nil {
		return APIKey{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range a.file.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return APIKey{}, false
}

// DeleteKey removes the key with id; it reports whether there was one.
func (a *Accounts) DeleteKey(id int) (bool, error) {
	if a == nil {
		return false, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.IndexFunc(a.file.Keys, func(k APIKey) bool { return k.ID == id })
	if i < 0 {
		return false, nil
	}
	old := a.file.Keys
	a.file.Keys = slices.Delete(slices.Clone(old), i, i+1)
	if err := a.save(); err != nil {
		a.file.Keys = old
		return false, err
	}
	return true, nil
}

// usable returns the key with id when it belongs to username, is the
// account's, and has not expired.
func (a *Accounts) usable(id int, username string) (APIKey, bool) {
	k, ok := a.Key(id)
	if !ok || a.Open() || k.Username != username || username != a.user {
		return APIKey{}, false
	}
	if k.ExpiresAt != nil && time.Now().After(*k.ExpiresAt) {
		return APIKey{}, false
	}
	return k, true
}

// CheckKey verifies a raw key ("ID-SECRET") of username and returns the
// key's username. An empty username accepts the key of any user (the
// legacy auth.login_with_api_key, which takes no user name).
func (a *Accounts) CheckKey(username, raw string) (string, bool) {
	idText, secret, ok := strings.Cut(raw, "-")
	id, err := strconv.Atoi(idText)
	if !ok || err != nil || secret == "" {
		return "", false
	}
	if username == "" {
		username = a.userName()
	}
	k, ok := a.usable(id, username)
	if !ok {
		return "", false
	}
	stored, _, err := scramKeys(secret, k.Salt, k.Iterations)
	if err != nil || !hmac.Equal(stored, k.StoredKey) {
		return "", false
	}
	return k.Username, true
}

// scramKeys derives RFC 5802's StoredKey and ServerKey from a secret with
// SHA-512, as truenas_api_client computes them.
func scramKeys(secret string, salt []byte, iterations int) (stored, server []byte, err error) {
	salted, err := pbkdf2.Key(sha512.New, secret, salt, iterations, sha512.Size)
	if err != nil {
		return nil, nil, err
	}
	clientKey := hmacSHA512(salted, []byte("Client Key"))
	sum := sha512.Sum512(clientKey)
	return sum[:], hmacSHA512(salted, []byte("Server Key")), nil
}

func hmacSHA512(key, data []byte) []byte {
	h := hmac.New(sha512.New, key)
	h.Write(data)
	return h.Sum(nil)
}

// decoyKey is what a SCRAM exchange for user's key that does not exist
// (or may not log in) runs with, so that it looks like one for a key
// that does until its end, where it fails as a wrong key fails: a salt
// of the same length, the same for every try of user, the iteration
// count of real keys, and a stored key nobody holds the secret of.
func (a *Accounts) decoyKey(user string) APIKey {
	k := APIKey{Username: user, Iterations: ScramIterations, Salt: hmacSHA512(a.decoy[:], []byte("salt:"+user))[:32],
		StoredKey: make([]byte, sha512.Size), ServerKey: make([]byte, sha512.Size)}
	rand.Read(k.StoredKey)
	rand.Read(k.ServerKey)
	return k
}
