//go:build tools

// Keeps kube-router's command in this module's dependency graph.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/pkg/cmd"
