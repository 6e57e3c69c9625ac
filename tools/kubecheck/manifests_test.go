// Package kubecheck validates deploy/kubernetes offline: every manifest is
// decoded strictly into the Kubernetes API's own Go types (k8s.io/api
// v0.37.2, Kubernetes 1.37), so an unknown or misspelt field, a wrong type,
// a bad quantity or a duplicate key fails; then the objects are checked
// against each other and against what the services need. It lives in a
// module of its own so that the Kubernetes modules stay out of shippy's
// go.mod and images; `make test` runs it (make kubecheck).
//
// Not covered: what only an API server or admission would refuse (enum
// values such as imagePullPolicy, required fields the types do not mark,
// cluster policies). The environment variables' names and the NATS values
// are checked in deploy/kubernetes itself (go test ./deploy/kubernetes/).
package kubecheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// dir is the directory checked; KUBECHECK_DIR points the test elsewhere
// (a copy with a deliberate mistake, to see it fail).
func dir() string {
	if d := os.Getenv("KUBECHECK_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "deploy", "kubernetes")
}

// Files in dir that are not manifests applied by kustomization.yaml.
const (
	kustomizationFile = "kustomization.yaml"
	secretsExample    = "secrets.example.yaml" // the Secrets' shape; created with kubectl
	natsValues        = "nats-values.yaml"     // Helm values of the NATS chart
)

// newObject returns the Go type of an apiVersion and kind the manifests may
// use; anything else (a typo, a removed version such as policy/v1beta1) fails.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 Secret":
		return &corev1.Secret{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	}
	return nil, false
}

type object struct {
	file string
	kind string
	name string
	obj  any
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.kind, o.name, o.file) }

// decodeFile strictly decodes every document of a manifest file.
func decodeFile(t *testing.T, file string) []object {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir(), file))
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Errorf("%s: document %d: %v", file, i, err)
			continue
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			t.Errorf("%s: document %d: apiVersion %q kind %q is not one these manifests use (a typo?)", file, i, tm.APIVersion, tm.Kind)
			continue
		}
		if err := strictDecode(doc, obj); err != nil {
			t.Errorf("%s: document %d (%s): %v", file, i, tm.Kind, err)
			continue
		}
		meta := obj.(metav1.Object)
		out = append(out, object{file: file, kind: tm.Kind, name: meta.GetName(), obj: obj})
	}
	return out
}

// strictDecode decodes YAML into obj as the API server's strict field
// validation does: duplicate keys, unknown fields and wrong types are
// errors, and field names are case-sensitive (encoding/json alone would take
// readOnlyRootFileSystem for readOnlyRootFilesystem).
func strictDecode(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// kustomization is the part of kustomize's Kustomization these manifests
// use; strict decoding refuses any other field.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

type manifests struct {
	kust        kustomization
	objects     []object
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	configMaps  map[string]*corev1.ConfigMap
	// secrets are the keys of each Secret of secretsExample.
	secrets map[string]map[string]bool
}

func load(t *testing.T) manifests {
	t.Helper()
	var m manifests
	raw, err := os.ReadFile(filepath.Join(dir(), kustomizationFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := strictDecode(raw, &m.kust); err != nil {
		t.Fatalf("%s: %v", kustomizationFile, err)
	}
	m.configMaps = map[string]*corev1.ConfigMap{}
	for _, f := range m.kust.Resources {
		for _, o := range decodeFile(t, f) {
			m.objects = append(m.objects, o)
			switch v := o.obj.(type) {
			case *appsv1.Deployment:
				m.deployments = append(m.deployments, v)
			case *corev1.Service:
				m.services = append(m.services, v)
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, v)
			case *corev1.ConfigMap:
				m.configMaps[v.Name] = v
			case *corev1.Secret:
				t.Errorf("%s: a Secret is applied by %s; Secrets are created with kubectl (see %s)", o, kustomizationFile, secretsExample)
			}
		}
	}
	m.secrets = map[string]map[string]bool{}
	for _, o := range decodeFile(t, secretsExample) {
		s, ok := o.obj.(*corev1.Secret)
		if !ok {
			t.Errorf("%s: %s holds %s; want Secrets only", secretsExample, o.name, o.kind)
			continue
		}
		m.secrets[s.Name] = map[string]bool{}
		for k := range s.StringData {
			m.secrets[s.Name][k] = true
		}
		for k := range s.Data {
			m.secrets[s.Name][k] = true
		}
	}
	return m
}

func TestKustomization(t *testing.T) {
	m := load(t)
	k := m.kust
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion %q kind %q; want kustomize.config.k8s.io/v1beta1 Kustomization", kustomizationFile, k.APIVersion, k.Kind)
	}
	if errs := validation.IsDNS1123Label(k.Namespace); len(errs) > 0 {
		t.Errorf("%s: namespace %q: %s", kustomizationFile, k.Namespace, strings.Join(errs, "; "))
	}
	// Every manifest in the directory is applied, and nothing else.
	files, err := filepath.Glob(filepath.Join(dir(), "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		switch b := filepath.Base(f); b {
		case kustomizationFile, secretsExample, natsValues:
		default:
			want = append(want, b)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: resources = %v; want every manifest of %s: %v", kustomizationFile, got, dir(), want)
	}
	if len(m.deployments) != 2 {
		t.Errorf("found %d Deployments; want 2 (user-service, email-service)", len(m.deployments))
	}
}

func TestObjectNames(t *testing.T) {
	m := load(t)
	seen := map[string]bool{}
	for _, o := range m.objects {
		if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
			t.Errorf("%s: name: %s", o, strings.Join(errs, "; "))
		}
		if key := o.kind + "/" + o.name; seen[key] {
			t.Errorf("%s: defined twice", o)
		} else {
			seen[key] = true
		}
		meta := o.obj.(metav1.Object)
		if meta.GetNamespace() != "" {
			t.Errorf("%s: namespace %q; leave it to %s", o, meta.GetNamespace(), kustomizationFile)
		}
		if meta.GetLabels()["app.kubernetes.io/part-of"] != "shippy" {
			t.Errorf("%s: label app.kubernetes.io/part-of is not shippy", o)
		}
	}
}

// Expected of every Deployment: the security design and the availability
// the services were written for.
const (
	nonRootUID      = 65532 // distroless "nonroot", as in the Dockerfile
	minReplicas     = 2
	minGraceSeconds = 30 // docker-compose.yml's stop_grace_period
)

func TestDeployments(t *testing.T) {
	m := load(t)
	for _, d := range m.deployments {
		t.Run(d.Name, func(t *testing.T) {
			checkDeployment(t, m, d)
		})
	}
}

func checkDeployment(t *testing.T, m manifests, d *appsv1.Deployment) {
	spec := d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)

	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("selector %v does not match the pod labels %v (%v)", d.Spec.Selector, podLabels, err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < minReplicas {
		t.Errorf("replicas = %s; want at least %d", ptrString(d.Spec.Replicas), minReplicas)
	}
	if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxUnavailable == nil || intstr.ValueOrDefault(ru.MaxUnavailable, intstr.FromInt32(1)).String() != "0" {
		t.Errorf("strategy = %+v; want RollingUpdate with maxUnavailable 0 (a rollout never lowers capacity)", d.Spec.Strategy)
	}
	for _, c := range spec.TopologySpreadConstraints {
		s, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
		if err != nil || !s.Matches(podLabels) {
			t.Errorf("topologySpreadConstraint %s: labelSelector does not match the pod labels", c.TopologyKey)
		}
	}
	if len(spec.TopologySpreadConstraints) == 0 && spec.Affinity == nil {
		t.Error("no topologySpreadConstraints or affinity: replicas may share one node")
	}

	// Security: the container runs as the image's non-root user, cannot
	// gain privileges or write its root file system, and talks to no API.
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: the services need no Kubernetes API token")
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds < minGraceSeconds {
		t.Errorf("terminationGracePeriodSeconds = %s; want at least %d (the services' graceful stop)", ptrString(spec.TerminationGracePeriodSeconds), minGraceSeconds)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod securityContext.seccompProfile is not RuntimeDefault")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("the pod shares a host namespace")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		switch {
		case v.HostPath != nil:
			t.Errorf("volume %s: hostPath", v.Name)
		case v.Secret != nil:
			checkSecretRef(t, m, "volume "+v.Name, v.Secret.SecretName, "")
			for _, it := range v.Secret.Items {
				checkSecretRef(t, m, "volume "+v.Name, v.Secret.SecretName, it.Key)
			}
		case v.ConfigMap != nil:
			if m.configMaps[v.ConfigMap.Name] == nil {
				t.Errorf("volume %s: ConfigMap %q is not in the manifests", v.Name, v.ConfigMap.Name)
			}
		}
	}
	if len(spec.Containers) == 0 {
		t.Fatal("no containers")
	}
	for _, c := range spec.Containers {
		checkContainer(t, m, c, psc, volumes)
	}
}

func checkContainer(t *testing.T, m manifests, c corev1.Container, psc *corev1.PodSecurityContext, volumes map[string]corev1.Volume) {
	t.Helper()
	where := "container " + c.Name
	if c.Image == "" || c.ImagePullPolicy == "" {
		t.Errorf("%s: image %q, imagePullPolicy %q; want both set", where, c.Image, c.ImagePullPolicy)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: no securityContext", where)
	default:
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities = %+v; want drop [ALL] and nothing added", where, sc.Capabilities)
		}
		runAsNonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || sc.RunAsNonRoot == nil && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
		uid := sc.RunAsUser
		if uid == nil && psc != nil {
			uid = psc.RunAsUser
		}
		if !runAsNonRoot || uid == nil || *uid != nonRootUID {
			t.Errorf("%s: runAsNonRoot %v, runAsUser %s; want true and %d", where, runAsNonRoot, ptrString(uid), nonRootUID)
		}
	}

	// Requests from measurement, a memory limit with headroom.
	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := req[r]; !ok || q.IsZero() {
			t.Errorf("%s: no %s request", where, r)
		}
	}
	if q, ok := lim[corev1.ResourceMemory]; !ok || q.Cmp(req[corev1.ResourceMemory]) <= 0 {
		t.Errorf("%s: memory limit %v; want one above the request %v", where, lim.Memory(), req.Memory())
	}
	if q, ok := lim[corev1.ResourceCPU]; ok && q.Cmp(req[corev1.ResourceCPU]) < 0 {
		t.Errorf("%s: cpu limit %v below the request %v", where, q.String(), req.Cpu())
	}

	// Probes: liveness /healthz, readiness /readyz, on a port the container
	// declares (the metrics server's).
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
		ports[fmt.Sprint(p.ContainerPort)] = true
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"startupProbe", c.StartupProbe, "/healthz"},
	} {
		if p.probe == nil {
			if p.name != "startupProbe" {
				t.Errorf("%s: no %s", where, p.name)
			}
			continue
		}
		h := p.probe.HTTPGet
		if h == nil {
			t.Errorf("%s: %s is not an httpGet probe", where, p.name)
			continue
		}
		if h.Path != p.path {
			t.Errorf("%s: %s path %q; want %q", where, p.name, h.Path, p.path)
		}
		if !ports[h.Port.String()] {
			t.Errorf("%s: %s port %q is not a port the container declares", where, p.name, h.Port.String())
		}
	}

	// Environment: no name twice, $(NAME) only after NAME (Kubernetes
	// leaves it unexpanded otherwise), Secrets and ConfigMaps that exist.
	defined := map[string]bool{}
	for _, f := range c.EnvFrom {
		switch {
		case f.ConfigMapRef != nil:
			cm := m.configMaps[f.ConfigMapRef.Name]
			if cm == nil {
				t.Errorf("%s: envFrom ConfigMap %q is not in the manifests", where, f.ConfigMapRef.Name)
				continue
			}
			for k := range cm.Data {
				defined[k] = true
			}
		case f.SecretRef != nil:
			checkSecretRef(t, m, where+" envFrom", f.SecretRef.Name, "")
		}
	}
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			t.Errorf("%s: env %s set twice", where, e.Name)
		}
		seen[e.Name] = true
		for _, ref := range varRef.FindAllStringSubmatch(e.Value, -1) {
			if !defined[ref[1]] {
				t.Errorf("%s: env %s uses $(%s) before it is defined", where, e.Name, ref[1])
			}
		}
		if vf := e.ValueFrom; vf != nil {
			if vf.SecretKeyRef != nil {
				checkSecretRef(t, m, where+" env "+e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
			}
			if vf.ConfigMapKeyRef != nil {
				if cm := m.configMaps[vf.ConfigMapKeyRef.Name]; cm == nil || cm.Data[vf.ConfigMapKeyRef.Key] == "" {
					t.Errorf("%s: env %s: ConfigMap %s has no key %s", where, e.Name, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
				}
			}
			if vf.ResourceFieldRef != nil {
				name := corev1.ResourceName(strings.TrimPrefix(strings.TrimPrefix(vf.ResourceFieldRef.Resource, "limits."), "requests."))
				if _, ok := lim[name]; strings.HasPrefix(vf.ResourceFieldRef.Resource, "limits.") && !ok {
					t.Errorf("%s: env %s reads %s, which the container does not set", where, e.Name, vf.ResourceFieldRef.Resource)
				}
			}
		}
		defined[e.Name] = true
	}
	// A *_FILE variable names a file from a mounted volume.
	for _, e := range c.Env {
		if !strings.HasSuffix(e.Name, "_FILE") {
			continue
		}
		if !mounted(c, volumes, e.Value) {
			t.Errorf("%s: env %s = %q is not under a mounted Secret volume", where, e.Name, e.Value)
		}
	}
	for _, vm := range c.VolumeMounts {
		if _, ok := volumes[vm.Name]; !ok {
			t.Errorf("%s: volumeMount %s: no such volume", where, vm.Name)
		}
		if !vm.ReadOnly {
			t.Errorf("%s: volumeMount %s is writable", where, vm.Name)
		}
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// mounted reports whether path is a file of a Secret volume mounted in c
// (one of its items, when the volume lists them).
func mounted(c corev1.Container, volumes map[string]corev1.Volume, path string) bool {
	for _, vm := range c.VolumeMounts {
		v := volumes[vm.Name]
		if v.Secret == nil {
			continue
		}
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if len(v.Secret.Items) == 0 {
			return true
		}
		for _, it := range v.Secret.Items {
			if it.Path == rel {
				return true
			}
		}
	}
	return false
}

func checkSecretRef(t *testing.T, m manifests, where, name, key string) {
	t.Helper()
	keys, ok := m.secrets[name]
	switch {
	case !ok:
		t.Errorf("%s: Secret %q is not in %s", where, name, secretsExample)
	case key != "" && !keys[key]:
		t.Errorf("%s: Secret %q has no key %q in %s", where, name, key, secretsExample)
	}
}

// selected returns the Deployments whose pods sel selects.
func selected(m manifests, sel labels.Selector) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range m.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

func TestServices(t *testing.T) {
	m := load(t)
	for _, s := range m.services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", s.Name)
			continue
		}
		ds := selected(m, labels.SelectorFromSet(s.Spec.Selector))
		if len(ds) != 1 {
			t.Errorf("Service %s: selector %v selects %d Deployments; want 1", s.Name, s.Spec.Selector, len(ds))
			continue
		}
		ports := map[string]bool{}
		for _, c := range ds[0].Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports[p.Name] = true
				ports[fmt.Sprint(p.ContainerPort)] = true
			}
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort.String()
			if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
				target = fmt.Sprint(p.Port)
			}
			if !ports[target] {
				t.Errorf("Service %s: port %s targets %q, which Deployment %s does not declare", s.Name, p.Name, target, ds[0].Name)
			}
		}
	}
}

func TestPodDisruptionBudgets(t *testing.T) {
	m := load(t)
	covered := map[string]bool{}
	for _, p := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("PodDisruptionBudget %s: selector %v (%v)", p.Name, p.Spec.Selector, err)
			continue
		}
		ds := selected(m, sel)
		if len(ds) != 1 {
			t.Errorf("PodDisruptionBudget %s: selects %d Deployments; want 1", p.Name, len(ds))
			continue
		}
		covered[ds[0].Name] = true
		replicas := int(*ds[0].Spec.Replicas)
		switch {
		case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
			t.Errorf("PodDisruptionBudget %s: both minAvailable and maxUnavailable", p.Name)
		case p.Spec.MaxUnavailable != nil:
			if n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, replicas, true); err != nil || n < 1 || n >= replicas {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %s of %d replicas; want 1 or more, and fewer than all", p.Name, p.Spec.MaxUnavailable.String(), replicas)
			}
		case p.Spec.MinAvailable != nil:
			if n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, replicas, true); err != nil || n < 1 || n >= replicas {
				t.Errorf("PodDisruptionBudget %s: minAvailable %s of %d replicas would block every drain or allow none", p.Name, p.Spec.MinAvailable.String(), replicas)
			}
		default:
			t.Errorf("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", p.Name)
		}
	}
	for _, d := range m.deployments {
		if !covered[d.Name] {
			t.Errorf("Deployment %s has no PodDisruptionBudget", d.Name)
		}
	}
}

func TestConfigMapsUsed(t *testing.T) {
	m := load(t)
	for name := range m.configMaps {
		used := false
		for _, d := range m.deployments {
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, f := range c.EnvFrom {
					used = used || f.ConfigMapRef != nil && f.ConfigMapRef.Name == name
				}
			}
		}
		if !used {
			t.Errorf("ConfigMap %s: no Deployment uses it", name)
		}
	}
}

// The quantities parse (strict decoding already refused malformed ones);
// this keeps an absurd unit (500M CPU, 128m memory) from passing.
func TestResourceUnits(t *testing.T) {
	m := load(t)
	for _, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			for kind, list := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
				if q, ok := list[corev1.ResourceCPU]; ok && q.Cmp(resource.MustParse("8")) > 0 {
					t.Errorf("%s/%s: cpu %s %s is more than 8 cores", d.Name, c.Name, kind, q.String())
				}
				if q, ok := list[corev1.ResourceMemory]; ok && (q.Cmp(resource.MustParse("16Mi")) < 0 || q.Cmp(resource.MustParse("8Gi")) > 0) {
					t.Errorf("%s/%s: memory %s %s is outside 16Mi..8Gi (a unit typo?)", d.Name, c.Name, kind, q.String())
				}
			}
		}
	}
}
