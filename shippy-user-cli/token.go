package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/shippy/shippy/internal/tokenauth"
)

// The token get, list, validate and demo send comes from, in order:
//  1. --token T,
//  2. SHIPPY_TOKEN,
//  3. the token file `auth` writes: $XDG_CONFIG_HOME/shippy/token, or
//     ~/.config/shippy/token without XDG_CONFIG_HOME; mode 0600 in a 0700
//     folder, refused when others may read it. `logout` removes it.

// tokenFileName is the file's path under the configuration folder.
const tokenFileName = "shippy/token"

// tokenPath is where auth saves the token.
func (a *app) tokenPath() (string, error) {
	if dir := a.getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, tokenFileName), nil
	}
	if home := a.getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".config", tokenFileName), nil
	}
	return "", errors.New("neither XDG_CONFIG_HOME nor HOME is an absolute path: no place for the token file")
}

// bearerToken returns the token to send, or "" when there is none.
func (a *app) bearerToken() (string, error) {
	if a.token != "" {
		return a.token, nil
	}
	if t := strings.TrimSpace(a.getenv("SHIPPY_TOKEN")); t != "" {
		return t, nil
	}
	path, err := a.tokenPath()
	if err != nil {
		return "", nil // no file can exist; the service answers 401 with the hint
	}
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", usageErrorf("token file: %v", err)
	}
	// As ssh does with keys: a token others can read is someone else's too.
	if info.Mode().Perm()&0o077 != 0 {
		return "", usageErrorf("token file %s is readable by others (mode %04o): chmod 600 it, or run %s auth again", path, info.Mode().Perm(), prog)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("token file: %v", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// withToken returns ctx sending the caller's token, if there is one.
func (a *app) withToken(ctx context.Context) (context.Context, error) {
	tok, err := a.bearerToken()
	if err != nil || tok == "" {
		return ctx, err
	}
	return tokenauth.BearerContext(ctx, tok), nil
}

// saveToken writes token to the token file, mode 0600, replacing it
// atomically, and returns the file's path.
func (a *app) saveToken(token string) (string, error) {
	path, err := a.tokenPath()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	f, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename, there is nothing left to remove
	// CreateTemp makes the file 0600 already; Chmod says so for readers.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", fmt.Errorf("save token: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("save token: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", fmt.Errorf("save token: %w", err)
	}
	return path, nil
}

// signInHint turns the service's 401 on a call that needs a token into a
// rejection that says how to get one.
func signInHint(err error) error {
	if err == nil {
		return nil
	}
	_, merr := microError(err)
	if merr.Code != 401 || merr.Id == clientErrorID {
		return err
	}
	return &exitError{code: exitRejected, msg: fmt.Sprintf("%s (401): sign in with `%s auth --email EMAIL` (it saves the token), or pass --token or SHIPPY_TOKEN", merr.Detail, prog)}
}

// forbidden reports whether err is the service's 403.
func forbidden(err error) bool {
	_, merr := microError(err)
	return merr.Code == 403 && merr.Id != clientErrorID
}
