//go:build tools

// Keeps helm's module in this module's dependency graph.
package tools

import _ "helm.sh/helm/v3/pkg/action"
