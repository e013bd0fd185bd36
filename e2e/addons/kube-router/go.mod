// Wrapper module: builds kube-router at a pinned version for the real-node tier (e2e/bin/build-controlplane.sh --nodes),
// apart from the control plane's module so that their dependency versions never fight.
module floe.dev/e2e/addons/kube-router

go 1.24.0

require github.com/cloudnativelabs/kube-router/v2 v2.1.0
