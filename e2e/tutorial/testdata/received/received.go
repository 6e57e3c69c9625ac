// Package received prints what a tutorial subscriber decoded, one JSON line
// on stdout per event, for e2e/tutorial to compare with the user it created.
package received

import (
	"encoding/json"
	"fmt"
	"os"
)

// Prefix starts every line Print writes.
const Prefix = "received "

// User is one decoded event; every field is printed, empty or not.
type User struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Company  string `json:"company"`
	Email    string `json:"email"`
	Password string `json:"password"`
}

// Print writes the line; a failed write is fatal, as the test would wait in vain.
func Print(id, name, company, email, password string) {
	b, _ := json.Marshal(User{ID: id, Name: name, Company: company, Email: email, Password: password})
	if _, err := fmt.Fprintf(os.Stdout, "%s%s\n", Prefix, b); err != nil {
		os.Exit(1)
	}
}
