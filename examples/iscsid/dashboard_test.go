package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// dashboardFile is the Grafana dashboard shipped with iscsid.
const dashboardFile = "grafana-dashboard.json"

// dashboardMetrics returns the metric names the dashboard's queries use.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(b, &dash), "the dashboard is valid JSON")
	require.NotEmpty(t, dash.Title)
	name := regexp.MustCompile(`iscsikit_[a-z_]+`)
	seen := map[string]bool{}
	var out []string
	add := func(expr string) {
		for _, n := range name.FindAllString(expr, -1) {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q queries nothing", p.Title)
		for _, q := range p.Targets {
			require.NotEmpty(t, q.Expr, "panel %q", p.Title)
			add(q.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if s, ok := v.Query.(string); ok {
			add(s)
		}
	}
	return out
}

// requireDashboardMetrics checks that every metric the dashboard queries
// is in the scrape (histogram series by their family).
func requireDashboardMetrics(t *testing.T, families map[string]*dto.MetricFamily) {
	t.Helper()
	names := dashboardMetrics(t)
	require.NotEmpty(t, names)
	for _, n := range names {
		f := families[n]
		if f == nil {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suffix); ok && families[base] != nil && families[base].GetType() == dto.MetricType_HISTOGRAM {
					f = families[base]
				}
			}
		}
		require.NotNil(t, f, "the dashboard queries %s, which the scrape does not have", n)
		require.NotEmpty(t, f.GetMetric(), n)
	}
}

func TestDashboardIsValidJSON(t *testing.T) {
	names := dashboardMetrics(t)
	require.Contains(t, names, "iscsikit_scsi_commands_total")
	require.Contains(t, names, "iscsikit_scsi_read_latency_seconds_bucket")
}
