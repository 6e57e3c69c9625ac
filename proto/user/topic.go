package user

// TopicUserCreated is the topic a UserCreated event is published on. The
// user-service publishes to it and the email-service subscribes to it; neither
// knows the other, only this name and the message.
const TopicUserCreated = "user.created"
