package dashboard

// Every query of the dashboards and every alert rule is valid PromQL, and the alerts file is a
// valid Prometheus rules file (rule names, labels, annotation templates), as Prometheus itself
// parses them (github.com/prometheus/prometheus: promql/parser, model/rulefmt).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func TestDashboardQueriesAreValidPromQL(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	n := 0
	for _, f := range dashboards(t) {
		raw, _ := os.ReadFile(f)
		var d struct {
			Panels []panel `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		for _, pn := range d.Panels {
			for _, q := range pn.Targets {
				// Grafana replaces the dashboard variable before Prometheus sees the query
				expr := strings.ReplaceAll(q.Expr, "$namespace", ".*")
				if _, err := p.ParseExpr(expr); err != nil {
					t.Errorf("%s, panel %q: %v\n%s", f, pn.Title, err, q.Expr)
				}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no queries found")
	}
}

func TestAlertsAreAValidRulesFile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "charts", "floe", "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// the chart replaces DISK_FULL_RATIO with monitoring.prometheusRule.diskFullRatio
	content := []byte(strings.ReplaceAll(string(raw), "DISK_FULL_RATIO", "0.85"))
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
	for _, e := range errs {
		t.Errorf("charts/floe/files/alerts.yaml: %v", e)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s needs a severity label and a summary", r.Alert)
			}
		}
	}
}
