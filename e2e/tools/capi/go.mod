module capi-calico-webhook.invalid/e2e/tools/capi

go 1.26.0

require sigs.k8s.io/cluster-api v1.14.0
