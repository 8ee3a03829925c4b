.PHONY: test crd demo

# The whole test suite, with every server it needs installed and started by the tests.
test:
	bash scripts/test.sh

# Regenerate the CRD from the Rust types (crds/ and the copies deploy/ and the Helm chart install).
crd:
	cargo run -q -- crd > crds/scalingpolicy.yaml
	cp crds/scalingpolicy.yaml deploy/crd.yaml
	cp crds/scalingpolicy.yaml charts/pulsar-autoscaler/crds/scalingpolicy.yaml
