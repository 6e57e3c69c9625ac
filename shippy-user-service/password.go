package main

import "golang.org/x/crypto/bcrypt"

// maxPasswordBytes is bcrypt's input limit: longer passwords would be
// silently truncated by other implementations and are refused by Go's.
const maxPasswordBytes = 72

// bcryptHasher hashes passwords with bcrypt at a fixed cost.
type bcryptHasher struct {
	cost int
}

func (h bcryptHasher) Hash(password []byte) ([]byte, error) {
	return bcrypt.GenerateFromPassword(password, h.cost)
}

func (h bcryptHasher) Compare(hash, password []byte) error {
	return bcrypt.CompareHashAndPassword(hash, password)
}
