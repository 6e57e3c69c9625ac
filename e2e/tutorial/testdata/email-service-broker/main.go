// The tutorial's email-service on the raw broker ("Microservices in Golang,
// part 5", before micro.RegisterSubscriber): the user-service's JSON message
// (EVENTS_CODEC=json) decoded with encoding/json into the tutorial's User.
// Ported to go-micro v6 (the name first in micro.NewService, broker.Event
// for broker.Publication); one line per event on stdout for e2e/tutorial.
package main

import (
	"encoding/json"
	"log"

	pb "github.com/shippy/shippy/e2e/tutorial/testdata/tutorialpb"
	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/e2e/tutorial/testdata/received"
)

const topic = "user.created"

func main() {
	srv := micro.NewService(
		"go.micro.srv.email",
		micro.Version("latest"),
	)

	srv.Init()

	// Get the broker instance using our environment variables
	pubsub := srv.Server().Options().Broker
	if err := pubsub.Connect(); err != nil {
		log.Fatal(err)
	}

	// Subscribe to messages on the broker
	_, err := pubsub.Subscribe(topic, func(p broker.Event) error {
		var user *pb.User
		if err := json.Unmarshal(p.Message().Body, &user); err != nil {
			return err
		}
		log.Println(user)
		go sendEmail(user)
		return nil
	})
	if err != nil {
		log.Println(err)
	}

	// Run the server
	if err := srv.Run(); err != nil {
		log.Println(err)
	}
}

func sendEmail(user *pb.User) error {
	log.Println("Sending email to:", user.Name)
	received.Print(user.Id, user.Name, user.Company, user.Email, user.Password)
	return nil
}
