package microenv

import (
	"time"

	"go-micro.dev/v6/registry"
)

// defaultMDNSTimeout is how long a lookup on mdns may take in all.
const defaultMDNSTimeout = time.Second

// patientMDNS is go-micro's mdns registry with lookups that ask again, in
// longer windows, when nothing answered. go-micro's mdns registry collects
// answers for one fixed window (100 ms) and reports a running service as
// missing when its answer comes later, which a loaded machine makes common:
// 30 of 600 CLI calls under `make up` failed with "not in the registry"
// (e2e TestMakeUpLosesNoEventAcrossEmailServiceRestart).
type patientMDNS struct {
	registry.Registry // registers and watches
	// lookups ask in windows of 1/10, 3/10 and 6/10 of the total.
	lookups []registry.Registry
}

func newPatientMDNS(total time.Duration) *patientMDNS {
	if total <= 0 {
		total = defaultMDNSTimeout
	}
	p := &patientMDNS{Registry: registry.NewMDNSRegistry(registry.Timeout(total / 10))}
	for _, tenths := range []time.Duration{1, 3, 6} {
		p.lookups = append(p.lookups, registry.NewMDNSRegistry(registry.Timeout(total*tenths/10)))
	}
	return p
}

// GetService returns the first window's answer that has a node.
func (p *patientMDNS) GetService(name string, opts ...registry.GetOption) ([]*registry.Service, error) {
	err := registry.ErrNotFound
	for _, l := range p.lookups {
		var services []*registry.Service
		services, err = l.GetService(name, opts...)
		if err == nil && hasNodes(services) {
			return services, nil
		}
	}
	if err == nil {
		err = registry.ErrNotFound
	}
	return nil, err
}

func hasNodes(services []*registry.Service) bool {
	for _, s := range services {
		if len(s.Nodes) > 0 {
			return true
		}
	}
	return false
}
