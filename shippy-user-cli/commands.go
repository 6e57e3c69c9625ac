package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	merrors "go-micro.dev/v6/errors"

	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// userJSON is a user as --json prints it: never a password.
type userJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Company string `json:"company"`
	Email   string `json:"email"`
}

func toJSON(u *pb.User) userJSON {
	return userJSON{ID: u.GetId(), Name: u.GetName(), Company: u.GetCompany(), Email: u.GetEmail()}
}

func toJSONs(us []*pb.User) []userJSON {
	out := make([]userJSON, 0, len(us))
	for _, u := range us {
		out = append(out, toJSON(u))
	}
	return out
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) printUsers(us []*pb.User) {
	if len(us) == 0 {
		fmt.Fprintln(a.stdout, "No users.")
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tEMAIL\tCOMPANY")
	for _, u := range us {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.GetId(), u.GetName(), u.GetEmail(), u.GetCompany())
	}
	_ = tw.Flush()
}

func runCreate(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	name := fs.String("name", "", "the user's name (required)")
	email := fs.String("email", "", "the user's email (required)")
	company := fs.String("company", "", "the user's company")
	pw := fs.String("password", "", "password, 8 to 72 bytes (or SHIPPY_PASSWORD, or a prompt)")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if err := required([2]string{"name", *name}, [2]string{"email", *email}); err != nil {
		return err
	}
	password, err := a.password(*pw)
	if err != nil {
		return err
	}
	svc, err := a.client()
	if err != nil {
		return err
	}
	var resp *pb.Response
	err = a.call(ctx, func(ctx context.Context) (err error) {
		resp, err = svc.Create(ctx, &pb.User{Name: *name, Email: *email, Company: *company, Password: password})
		return err
	})
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(struct {
			User  userJSON `json:"user"`
			Token string   `json:"token,omitempty"`
		}{toJSON(resp.GetUser()), resp.GetToken().GetToken()})
	}
	fmt.Fprintf(a.stdout, "Created: %s\n", resp.GetUser().GetId())
	return nil
}

func runGet(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	id := fs.String("id", "", "the user's id (required)")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if err := required([2]string{"id", *id}); err != nil {
		return err
	}
	ctx, err := a.withToken(ctx)
	if err != nil {
		return err
	}
	svc, err := a.client()
	if err != nil {
		return err
	}
	var resp *pb.Response
	err = a.call(ctx, func(ctx context.Context) (err error) {
		resp, err = svc.Get(ctx, &pb.User{Id: *id})
		return err
	})
	if err != nil {
		return signInHint(err)
	}
	if a.json {
		return a.printJSON(struct {
			User userJSON `json:"user"`
		}{toJSON(resp.GetUser())})
	}
	a.printUsers([]*pb.User{resp.GetUser()})
	return nil
}

func runList(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	ctx, err := a.withToken(ctx)
	if err != nil {
		return err
	}
	svc, err := a.client()
	if err != nil {
		return err
	}
	users, err := a.list(ctx, svc)
	if err != nil {
		return signInHint(err)
	}
	if a.json {
		return a.printJSON(struct {
			Users []userJSON `json:"users"`
		}{toJSONs(users)})
	}
	a.printUsers(users)
	return nil
}

func (a *app) list(ctx context.Context, svc pb.UserService) ([]*pb.User, error) {
	var resp *pb.Response
	err := a.call(ctx, func(ctx context.Context) (err error) {
		resp, err = svc.GetAll(ctx, &pb.Request{})
		return err
	})
	return resp.GetUsers(), err
}

func runAuth(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("auth", flag.ContinueOnError)
	email := fs.String("email", "", "the user's email (required)")
	pw := fs.String("password", "", "password (or SHIPPY_PASSWORD, or a prompt)")
	noSave := fs.Bool("no-save", false, "print the token only; do not write the token file")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if err := required([2]string{"email", *email}); err != nil {
		return err
	}
	password, err := a.password(*pw)
	if err != nil {
		return err
	}
	svc, err := a.client()
	if err != nil {
		return err
	}
	token, err := a.auth(ctx, svc, *email, password)
	if err != nil {
		return err
	}
	if !*noSave {
		// Refused with a message, not ignored: a later command would
		// otherwise send an older token without saying so.
		if _, err := a.saveToken(token); err != nil {
			return &exitError{code: exitUsage, msg: fmt.Sprintf("%v (use --no-save to only print the token)", err)}
		}
	}
	if a.json {
		return a.printJSON(struct {
			Token string `json:"token"`
		}{token})
	}
	// The bare token, so that TOKEN=$(shippy-user-cli auth ...) works.
	fmt.Fprintln(a.stdout, token)
	return nil
}

func (a *app) auth(ctx context.Context, svc pb.UserService, email, password string) (string, error) {
	var tok *pb.Token
	err := a.call(ctx, func(ctx context.Context) (err error) {
		tok, err = svc.Auth(ctx, &pb.User{Email: email, Password: password})
		return err
	})
	return tok.GetToken(), err
}

func runValidate(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	token, err := a.bearerToken()
	if err != nil {
		return err
	}
	if token == "" {
		return usageErrorf("no token to check: --token, SHIPPY_TOKEN, or a token saved by %s auth", prog)
	}
	svc, err := a.client()
	if err != nil {
		return err
	}
	var tok *pb.Token
	err = a.call(ctx, func(ctx context.Context) (err error) {
		tok, err = svc.ValidateToken(ctx, &pb.Token{Token: token})
		return err
	})
	// tok only after a nil error: a call that timed out may still be
	// writing it.
	var valid bool
	var reason string
	if err == nil {
		valid = tok.GetValid()
	} else {
		// The service answers a bad token with 401 (or 400 for a malformed
		// request): that is the answer "not valid", not a failure.
		merr := merrors.FromError(err)
		if merr.Id == clientErrorID || (merr.Code != 401 && merr.Code != 400) {
			return err
		}
		valid, reason = false, merr.Detail
	}
	if !valid && reason == "" {
		reason = "token is not valid"
		if errs := tok.GetErrors(); len(errs) > 0 {
			reason = errs[0].GetDescription()
		}
	}
	if a.json {
		if err := a.printJSON(struct {
			Valid  bool   `json:"valid"`
			Reason string `json:"reason,omitempty"`
		}{valid, reason}); err != nil {
			return err
		}
	} else if valid {
		fmt.Fprintln(a.stdout, "valid")
	} else {
		fmt.Fprintf(a.stdout, "invalid: %s\n", oneLine(reason))
	}
	if !valid {
		return &exitError{code: exitRejected}
	}
	return nil
}

// runDemo is the tutorial's cli.go: create a sample user, list all users,
// authenticate as the new user and print the token. The email is unique so
// the demo can run again against the same database.
//
// Listing every user is for admins now: the demo lists them with the
// caller's token (--token, SHIPPY_TOKEN or the saved one) when it is an
// admin's, and otherwise shows the sample user alone, read with the token
// Create returned. It saves no token.
func runDemo(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	callerToken, err := a.bearerToken()
	if err != nil {
		return err
	}
	svc, err := a.client()
	if err != nil {
		return err
	}
	suffix, err := randomHex(4)
	if err != nil {
		return err
	}
	password, err := randomHex(12)
	if err != nil {
		return err
	}
	sample := &pb.User{
		Name:     "Ewan Valentine",
		Company:  "BBC",
		Email:    "ewan.valentine+" + suffix + "@example.com",
		Password: password,
	}
	var created *pb.Response
	err = a.call(ctx, func(ctx context.Context) (err error) {
		created, err = svc.Create(ctx, sample)
		return err
	})
	if err != nil {
		return fmt.Errorf("create sample user: %w", err)
	}
	users, all, err := a.demoUsers(ctx, callerToken, svc, created)
	if err != nil {
		return err
	}
	token, err := a.auth(ctx, svc, sample.Email, password)
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(struct {
			User     userJSON   `json:"user"`
			Users    []userJSON `json:"users"`
			AllUsers bool       `json:"all_users"`
			Token    string     `json:"token"`
		}{toJSON(created.GetUser()), toJSONs(users), all, token})
	}
	fmt.Fprintf(a.stdout, "Created: %s\n", created.GetUser().GetId())
	if all {
		fmt.Fprintln(a.stdout, "Users:")
	} else {
		fmt.Fprintln(a.stdout, "Your user (listing every user needs an admin's token):")
	}
	a.printUsers(users)
	fmt.Fprintf(a.stdout, "Your access token is: %s\n", token)
	return nil
}

// demoUsers lists every user with the caller's token when it is an
// admin's (all is true), else reads the sample user with the token Create
// gave it.
func (a *app) demoUsers(ctx context.Context, callerToken string, svc pb.UserService, created *pb.Response) (users []*pb.User, all bool, err error) {
	if callerToken != "" {
		users, err = a.list(tokenauth.BearerContext(ctx, callerToken), svc)
		switch {
		case err == nil:
			return users, true, nil
		case !forbidden(err) && signInHint(err) == err: // neither 403 nor 401
			return nil, false, fmt.Errorf("list users: %w", err)
		}
	}
	ctx = tokenauth.BearerContext(ctx, created.GetToken().GetToken())
	var resp *pb.Response
	err = a.call(ctx, func(ctx context.Context) (err error) {
		resp, err = svc.Get(ctx, &pb.User{Id: created.GetUser().GetId()})
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("read the sample user: %w", err)
	}
	return []*pb.User{resp.GetUser()}, false, nil
}

func runLogout(_ context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("logout", flag.ContinueOnError)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	path, err := a.tokenPath()
	if err != nil {
		return usageErrorf("%v", err)
	}
	switch err := os.Remove(path); {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(a.stdout, "No saved token (%s).\n", path)
	case err != nil:
		return usageErrorf("remove the token file: %v", err)
	default:
		fmt.Fprintf(a.stdout, "Removed the saved token (%s).\n", path)
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
