package microenv

import (
	"strings"
	"testing"
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
