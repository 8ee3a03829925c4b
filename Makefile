.PHONY: test crd demo

# The whole test suite, with every server it needs installed and started by the tests.
test:
	bash scripts/test.sh

# Regenerate crds/scalingpolicy.yaml from the Rust types.
crd:
	cargo run -q -- crd > crds/scalingpolicy.yaml
