package httpbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport/headers"
)

// Publish delivers m to the topic's subscribers before it returns: to one
// node of each queue group, trying the group's other nodes in turn if one
// fails, and to every node of a broadcast subscription. It returns nil only
// if every group got it, ErrNoSubscriber if the registry has no subscriber
// for the topic, and otherwise the failures. A delivery counts once the
// subscriber answered 2xx: shippy's subscriber side does so after its
// handler returned nil, go-micro's after it ran the handler, whatever it
// returned.
//
// The broker.PublishContext context bounds it (DefaultPublishTimeout if it
// has no deadline). A failure leaves the groups that got the event with it:
// publishing again delivers it to them again.
func (b *Broker) Publish(topic string, m *broker.Message, opts ...broker.PublishOption) error {
	o := broker.PublishOptions{Context: context.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	ctx := o.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPublishTimeout)
		defer cancel()
	}

	b.mu.RLock()
	connected, lookup, reg, client, codec := b.connected, b.lookup, b.registry(), b.client, b.opts.Codec
	b.mu.RUnlock()
	if !connected {
		return fmt.Errorf("publish %s: %w", topic, ErrNotConnected)
	}

	msg := &broker.Message{Header: make(map[string]string, len(m.Header)+1), Body: m.Body}
	maps.Copy(msg.Header, m.Header)
	msg.Header[headers.Message] = topic
	body, err := codec.Marshal(msg)
	if err != nil {
		return fmt.Errorf("publish %s: encode: %w", topic, err)
	}

	services, err := lookup.GetService(ServiceName)
	groups := subscriberGroups(services, topic)
	if len(groups) == 0 {
		// go-micro's registry cache answers "not found" without asking for
		// 5 s after a lookup that found nothing, and to a caller racing the
		// first lookup: the registry itself has the last word.
		services, err = reg.GetService(ServiceName)
		groups = subscriberGroups(services, topic)
	}
	if len(groups) == 0 {
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("publish %s: look up subscribers: %w", topic, err)
		}
		return fmt.Errorf("publish %s: %w", topic, ErrNoSubscriber)
	}

	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.version == BroadcastVersion {
				errs[i] = deliverAll(ctx, client, g.nodes, body)
			} else {
				errs[i] = deliverOne(ctx, client, g.nodes, body)
			}
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%s: %w", g, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// group is one queue group of a topic (version = queue name), or its
// broadcast subscribers.
type group struct {
	version string
	nodes   []*registry.Node
}

func (g group) String() string {
	if g.version == BroadcastVersion {
		return "broadcast"
	}
	return fmt.Sprintf("queue %q", g.version)
}

// subscriberGroups returns the http broker nodes subscribed to topic, by
// queue group, each node once.
func subscriberGroups(services []*registry.Service, topic string) []group {
	byVersion := map[string]map[string]*registry.Node{}
	for _, svc := range services {
		if svc == nil {
			continue
		}
		for _, n := range svc.Nodes {
			if n == nil || n.Metadata["broker"] != "http" || n.Metadata["topic"] != topic {
				continue
			}
			if byVersion[svc.Version] == nil {
				byVersion[svc.Version] = map[string]*registry.Node{}
			}
			byVersion[svc.Version][n.Id] = n
		}
	}
	groups := make([]group, 0, len(byVersion))
	for v, nodes := range byVersion {
		groups = append(groups, group{version: v, nodes: sortedNodes(nodes)})
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].version < groups[j].version })
	return groups
}

func sortedNodes(m map[string]*registry.Node) []*registry.Node {
	out := make([]*registry.Node, 0, len(m))
	for _, n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// deliverOne posts to the group's nodes in random order until one accepts.
func deliverOne(ctx context.Context, c *http.Client, nodes []*registry.Node, body []byte) error {
	var errs []error
	for _, i := range rand.Perm(len(nodes)) {
		err := post(ctx, c, nodes[i], body)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// deliverAll posts to every node at once; it fails if any of them does.
func deliverAll(ctx context.Context, c *http.Client, nodes []*registry.Node, body []byte) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = post(ctx, c, n, body)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// post sends the encoded message to node, as go-micro's http broker does,
// and reports any answer but 2xx as an error.
func post(ctx context.Context, c *http.Client, node *registry.Node, body []byte) error {
	scheme := "http"
	if node.Metadata["secure"] == "true" {
		scheme = "https"
	}
	u := scheme + "://" + node.Address + "/?" + url.Values{"id": {node.Id}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("node %s: %w", node.Id, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("node %s: %w", node.Id, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	// Read what is left, within reason, so the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("node %s at %s answered %s: %s", node.Id, node.Address, resp.Status, strings.TrimSpace(string(text)))
	}
	return nil
}
