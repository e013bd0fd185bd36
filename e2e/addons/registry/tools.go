//go:build tools

// Keeps the distribution registry's command in this module's dependency graph.
package tools

import _ "github.com/distribution/distribution/v3/registry"
