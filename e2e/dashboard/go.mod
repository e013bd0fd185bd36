// Checks charts/floe/dashboards/*.json against the Grafana dashboard schema, as generated into
// Go by Grafana's foundation SDK (strict decoding: unknown or missing fields are errors).
module floe.dev/e2e/dashboard

go 1.24.0

require github.com/grafana/grafana-foundation-sdk/go v0.0.22
