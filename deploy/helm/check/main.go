// Command check reads the objects `helm template` rendered (YAML, several documents) and
// decodes each Kubernetes object strictly into its k8s.io/api type: an unknown field, a
// value of the wrong type or an object of a kind it does not know fails the check, naming
// the object. Custom resources (KEDA, prometheus-operator, Strimzi) are left to kubeconform
// with schemas built from their CRDs (deploy/helm/check.sh); they are listed on stdout.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// The core kinds the chart renders, each with what strict decoding fills.
var core = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// Custom resources, checked by kubeconform against their CRDs' schemas.
var custom = map[string]bool{
	"keda.sh/v1alpha1/ScaledObject":           true,
	"keda.sh/v1alpha1/TriggerAuthentication":  true,
	"monitoring.coreos.com/v1/ServiceMonitor": true,
	"monitoring.coreos.com/v1/PrometheusRule": true,
	"kafka.strimzi.io/v1beta2/KafkaTopic":     true,
	"kafka.strimzi.io/v1beta2/KafkaUser":      true,
}

func check(doc []byte) (string, error) {
	var meta typeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return "", fmt.Errorf("not a YAML object: %w", err)
	}
	key := meta.APIVersion + "/" + meta.Kind
	name := key + " " + meta.Metadata.Name
	if errs := validation.IsDNS1123Subdomain(meta.Metadata.Name); len(errs) > 0 {
		return "", fmt.Errorf("%s: metadata.name: %v", name, errs)
	}
	if custom[key] {
		return "custom " + name, nil
	}
	newObject, ok := core[key]
	if !ok {
		return "", fmt.Errorf("%s: a kind this check does not know (add it to core or custom)", name)
	}
	if err := yaml.UnmarshalStrict(doc, newObject()); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return "core " + name, nil
}

func main() {
	failed := false
	for _, path := range os.Args[1:] {
		file, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(file))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
				os.Exit(2)
			}
			if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("---")) {
				continue
			}
			var probe map[string]any
			if err := yaml.Unmarshal(doc, &probe); err != nil || len(probe) == 0 {
				continue // comments only
			}
			what, err := check(doc)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
				failed = true
				continue
			}
			fmt.Printf("%s: %s\n", path, what)
		}
		file.Close()
	}
	if failed {
		os.Exit(1)
	}
}
