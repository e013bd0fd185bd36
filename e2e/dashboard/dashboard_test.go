// Package dashboard checks the Grafana dashboards of charts/floe against Grafana's dashboard
// schema (github.com/grafana/grafana-foundation-sdk, types generated from Grafana's own schema:
// strict decoding refuses unknown fields, wrong types and missing required fields, Validate
// checks the constraints) and for what renders a useful panel: a datasource, queries with
// an expression, a place on the 24-column grid that overlaps no other panel.
package dashboard

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

func dashboards(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join("..", "..", "charts", "floe", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards under charts/floe/dashboards: %v", err)
	}
	return files
}

func TestDashboardsMatchTheGrafanaSchema(t *testing.T) {
	rt := cog.NewRuntime()
	rt.RegisterPanelcfgVariant(timeseries.VariantConfig())
	rt.RegisterPanelcfgVariant(stat.VariantConfig())
	rt.RegisterPanelcfgVariant(bargauge.VariantConfig())
	rt.RegisterDataqueryVariant(prometheus.VariantConfig())
	for _, f := range dashboards(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := dashboard.NewDashboard()
		if err := schemaErr(d.UnmarshalJSONStrict(raw)); err != nil {
			t.Errorf("%s does not match the Grafana dashboard schema:\n%v", f, err)
			continue
		}
		if err := schemaErr(d.Validate()); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// schemaErr: the SDK returns its error list as an error even when the list is empty.
func schemaErr(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}

type panel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource json.RawMessage           `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func TestPanelsRender(t *testing.T) {
	for _, f := range dashboards(t) {
		raw, _ := os.ReadFile(f)
		var d struct {
			UID    string  `json:"uid"`
			Panels []panel `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || len(d.Panels) == 0 {
			t.Fatalf("%s: uid %q, %d panels", f, d.UID, len(d.Panels))
		}
		ids := map[int]bool{}
		cells := map[[2]int]string{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q has no valid gridPos: %+v", f, p.Title, p.GridPos)
				continue
			}
			for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
				for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
					if other, taken := cells[[2]int{x, y}]; taken {
						t.Errorf("%s: panels %q and %q overlap at (%d,%d)", f, other, p.Title, x, y)
					}
					cells[[2]int{x, y}] = p.Title
				}
			}
			if p.Type == "row" {
				continue
			}
			if p.Title == "" || len(p.Datasource) == 0 || len(p.Targets) == 0 {
				t.Errorf("%s: panel %d %q lacks a title, datasource or targets", f, p.ID, p.Title)
			}
			for _, q := range p.Targets {
				if q.Expr == "" || q.RefID == "" {
					t.Errorf("%s: panel %q has a query without expr or refId", f, p.Title)
				}
			}
		}
	}
}
