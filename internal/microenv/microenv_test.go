package microenv

import (
	"strings"
	"testing"

	"go-micro.dev/v6"
	"go-micro.dev/v6/registry"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // substring; "" means valid
	}{
		{"nothing set uses go-micro defaults", nil, ""},
		{"nats broker and registry", map[string]string{"MICRO_BROKER": "nats", "MICRO_REGISTRY": "nats"}, ""},
		{"built-in http broker by name", map[string]string{"MICRO_BROKER": "http"}, ""},
		{"mdns registry by name", map[string]string{"MICRO_REGISTRY": "mdns"}, ""},
		{"nats transport", map[string]string{"MICRO_TRANSPORT": "nats"}, ""},
		{"shippy's durable jetstream broker", map[string]string{"MICRO_BROKER": "jetstream"}, ""},
		{"typo in broker", map[string]string{"MICRO_BROKER": "natz"}, `MICRO_BROKER="natz"`},
		{"unknown registry", map[string]string{"MICRO_REGISTRY": "zookeeper"}, `MICRO_REGISTRY="zookeeper"`},
		{"unknown transport", map[string]string{"MICRO_TRANSPORT": "quic"}, `MICRO_TRANSPORT="quic"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate(%v) = %v; want nil", tt.env, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate(%v) = %v; want an error naming %s", tt.env, err, tt.wantErr)
			}
		})
	}
}

// Each service looks services up in its own registry: building a second
// service with another registry must not re-point the first one's client,
// as it does when both share go-micro's process-wide default selector.
func TestNewServiceClientsKeepTheirRegistry(t *testing.T) {
	tests := []struct {
		name string
		opts func(reg registry.Registry) []micro.Option
		env  string // MICRO_REGISTRY
	}{
		{"registry option", func(reg registry.Registry) []micro.Option { return []micro.Option{micro.Registry(reg)} }, ""},
		// go-micro's cmd builds the registry and re-points the selector it
		// holds; the node is registered in the registry the service got.
		{"MICRO_REGISTRY", func(registry.Registry) []micro.Option { return nil }, "memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("MICRO_REGISTRY", tt.env)
			newService := func(name string) micro.Service {
				t.Helper()
				srv, err := NewService(name, tt.opts(registry.NewMemoryRegistry())...)
				if err != nil {
					t.Fatalf("NewService(%q) = %v; want nil", name, err)
				}
				return srv
			}
			a := newService("shippy.test.a")
			node := &registry.Service{Name: "shippy.test.target", Version: "latest",
				Nodes: []*registry.Node{{Id: "target-1", Address: "127.0.0.1:1"}}}
			if err := a.Options().Registry.Register(node); err != nil {
				t.Fatalf("Register: %v", err)
			}
			b := newService("shippy.test.b")

			if _, err := a.Client().Options().Selector.Select(node.Name); err != nil {
				t.Errorf("service a's client Select(%q) after building service b = %v; want a's registry's node", node.Name, err)
			}
			if _, err := b.Client().Options().Selector.Select(node.Name); err == nil {
				t.Errorf("service b's client Select(%q) = nil error; want not found (registered in a's registry only)", node.Name)
			}
			if got := a.Client().Options().ContentType; got != ContentType {
				t.Errorf("client content type = %q; want %q", got, ContentType)
			}
		})
	}
}
