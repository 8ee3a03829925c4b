.PHONY: test crd demo

# The whole test suite, with every server it needs installed and started by the tests.
test:
	bash scripts/test.sh

# Regenerate the CRD from the Rust types (crds/ and the copy deploy/ installs).
crd:
	cargo run -q -- crd > crds/scalingpolicy.yaml
	cp crds/scalingpolicy.yaml deploy/crd.yaml
