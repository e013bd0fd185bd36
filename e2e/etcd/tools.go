//go:build tools

// Keeps etcd's server module in this module's dependency graph.
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
