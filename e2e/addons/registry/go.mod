// Wrapper module: builds the distribution registry at a pinned version for the real-node tier (e2e/bin/build-controlplane.sh --nodes),
// apart from the control plane's module so that their dependency versions never fight.
module floe.dev/e2e/addons/registry

go 1.24.0

require github.com/distribution/distribution/v3 v3.0.0

require (
	github.com/distribution/reference v0.6.0 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.0 // indirect
)
