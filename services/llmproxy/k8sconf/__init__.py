"""Kubernetes manifests for the whole stack (a kustomize base), built from our configuration.

`python -m llmproxy.k8sconf --config deploy/llmproxy.yaml --out deploy/k8s` writes them; every
object comes from a pure function of the configuration, as Envoy's config does (envoyconf).
docs/kubernetes.md describes the objects and how they are validated.
"""
