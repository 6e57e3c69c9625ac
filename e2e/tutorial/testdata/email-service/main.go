// The tutorial's final email-service ("Microservices in Golang, part 5"),
// ported to go-micro v6 and nothing else: micro.NewService takes the name
// first, and the generated code is the tutorial's own user.proto. It adds
// one line per event on stdout, for e2e/tutorial to read what it decoded.
package main

import (
	"context"
	"log"

	pb "github.com/shippy/shippy/e2e/tutorial/testdata/tutorialpb"
	"go-micro.dev/v6"

	"github.com/shippy/shippy/e2e/tutorial/testdata/received"
)

const topic = "user.created"

type Subscriber struct{}

func main() {
	srv := micro.NewService(
		"go.micro.srv.email",
		micro.Version("latest"),
	)

	srv.Init()

	micro.RegisterSubscriber(topic, srv.Server(), new(Subscriber))

	// Run the server
	if err := srv.Run(); err != nil {
		log.Println(err)
	}
}

func (sub *Subscriber) Process(ctx context.Context, user *pb.User) error {
	log.Println("Picked up a new message")
	log.Println("Sending email to:", user.Name)
	received.Print(user.Id, user.Name, user.Company, user.Email, user.Password)
	return nil
}
