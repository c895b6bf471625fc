"""The PrometheusRule (checked and unit-tested with promtool) and the Grafana dashboard,
both against the series the operator really exports (exposition.py)."""
import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from exposition import TARGET_LABELS, problems, series, series_problems
from objects import RELEASE_NS, kinds, one
from render import CHART, render

HERE = pathlib.Path(__file__).resolve().parent
README = CHART.parents[1] / "README.md"
UNIT_TESTS = HERE / "alerts.test.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "amperity-operator.json"
# Series Prometheus itself writes for each target.
PROMETHEUS_SERIES = {"up"}


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is missing: tests/e2e/testenv.sh install (Debian's prometheus package has it)"
    return path


def rule(values=None):
    return one(render({"prometheusRule": {"enabled": True}, **(values or {})}), "PrometheusRule")


def alerts(values=None):
    [group] = rule(values)["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def rules_file(tmp_path, values=None):
    """The rendered PrometheusRule's groups as a Prometheus rule file, next to the unit tests."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule(values)["spec"]["groups"]}, sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return path


def test_the_rule_is_optional_and_labelled_for_prometheus():
    assert not kinds(render(), "PrometheusRule")
    r = rule({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}})
    assert r["apiVersion"] == "monitoring.coreos.com/v1"
    assert r["metadata"]["namespace"] == RELEASE_NS
    assert r["metadata"]["labels"]["release"] == "prom"


def test_promtool_checks_the_rules(tmp_path):
    out = subprocess.run([promtool(), "check", "rules", str(rules_file(tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_pass(tmp_path):
    rules_file(tmp_path)
    out = subprocess.run([promtool(), "test", "rules", UNIT_TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_unit_tests_would_catch_a_wrong_rule(tmp_path):
    """A rule that cannot fire fails its unit test (the tests are not vacuous)."""
    path = rules_file(tmp_path)
    text = path.read_text().replace("amperity_operator_amperity_throttled_total", "amperity_operator_throttled_total")
    path.write_text(text)
    out = subprocess.run([promtool(), "test", "rules", UNIT_TESTS.name], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "AmperityThrottled" in out.stdout + out.stderr


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired, quiet = set(), set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == set(alerts()), "alerts without a case in alerts.test.yaml where they fire"
    assert quiet == set(alerts()), "alerts without a case in alerts.test.yaml where they stay quiet"


def test_unit_test_series_are_series_the_operator_exports():
    exported = series()
    found = []
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for s in case["input_series"]:
            name = s["series"].split("{")[0]
            if name in PROMETHEUS_SERIES:
                continue
            found += series_problems(s["series"], exported)
            labels = re.findall(r'([a-z_]+)="', s["series"])
            assert {"namespace", "job", "pod", "instance"} <= set(labels), f"{s['series']}: not as scraped"
    assert not found, "\n".join(found)


def test_every_rule_names_only_exported_series_labels_and_values():
    exported = series()
    found = {name: problems(r["expr"], exported) for name, r in alerts().items()}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_the_checker_refuses_what_the_operator_does_not_export():
    """The check above can fail: names, labels and values the operator never writes."""
    exported = series()
    assert problems("rate(amperity_operator_runs_failed_total[5m])", exported)
    assert problems('rate(amperity_operator_amperity_requests_total{status="500"}[5m])', exported)
    assert problems('rate(amperity_operator_runs_finished_total{phase="Error"}[5m])', exported)
    assert problems('rate(amperity_operator_runs_finished_total{phase=~"Failed|Errored"}[5m])', exported)
    assert problems("sum by (workflow) (rate(amperity_operator_runs_finished_total[5m]))", exported)
    assert problems('amperity_operator_amperity_throttled_total{tenant="socktown"}', exported) == []
    assert series_problems('amperity_operator_amperity_throttled_total{namespace="x"}', exported)
    assert series_problems('amperity_operator_amperity_requests_total{endpoint="get",code="200"}', exported)


def test_no_exported_label_is_a_target_label():
    """A label named like a target label (`endpoint`, `namespace`, ...) is renamed
    exported_<label> by Prometheus unless the scrape honours labels, and then filters
    on it match nothing; with honorLabels it hides which target a series came from."""
    clashes = {name: sorted(set(labels) & TARGET_LABELS) for name, labels in series().items()}
    assert not any(clashes.values()), {k: v for k, v in clashes.items() if v}


def test_no_rule_reads_the_runs_gauge_or_up():
    """TTL deletion lowers runs{phase}, and `up` says nothing about leadership."""
    for name, r in alerts().items():
        assert not re.search(r"\bamperity_operator_runs\b(?!_)", r["expr"]), name
        assert not re.search(r"\bup\b", r["expr"]), name


def test_every_alert_says_what_to_do():
    for name, r in alerts().items():
        assert r["labels"]["severity"] in ("critical", "warning", "info"), name
        assert r["annotations"]["summary"] and len(r["annotations"]["description"]) > 80, name


RUNBOOK = CHART.parents[1] / "docs" / "runbook.md"


def runbook_sections():
    """The runbook's section anchors, as GitHub makes them from `## ` headings."""
    return {re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
            for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}


def test_every_alert_links_its_runbook_section():
    sections = runbook_sections()
    base = "https://github.com/amperity-operator/amperity-operator/blob/main/docs/runbook.md"
    for name, r in alerts().items():
        url = r["annotations"].get("runbook_url", "")
        assert url == f"{base}#{name.lower()}", (name, url)
        assert name.lower() in sections, f"docs/runbook.md has no section ## {name}"
    assert sections == {name.lower() for name in alerts()}, "runbook sections of no alert"
    moved = alerts({"prometheusRule": {"enabled": True, "runbookUrl": "https://wiki.example/amperity"}})
    assert moved["AmperityThrottled"]["annotations"]["runbook_url"] == "https://wiki.example/amperity#amperitythrottled"


def test_the_down_alert_is_scoped_to_its_installation():
    down = alerts()["AmperityOperatorDown"]["expr"]
    assert down == 'absent(amperity_operator_leader{namespace="amperity-system", job="amperity-operator-metrics"})'
    [r] = [a for a in one(render({"prometheusRule": {"enabled": True}}, namespace="team-b", name="etl"),
                          "PrometheusRule")["spec"]["groups"][0]["rules"] if a["alert"] == "AmperityOperatorDown"]
    assert r["expr"] == 'absent(amperity_operator_leader{namespace="team-b", job="etl-amperity-operator-metrics"})'


def test_the_budget_alert_follows_the_configured_rate():
    assert alerts()["AmperityRequestBudgetSaturated"]["expr"].endswith("> 4.5")
    budget = alerts({"amperity": {"rateLimit": 10}})["AmperityRequestBudgetSaturated"]
    assert budget["expr"].endswith("> 9")
    assert "amperity.rateLimit (10/s)" in budget["annotations"]["description"]


def test_alerts_can_be_labelled_and_left_out():
    chosen = alerts({"prometheusRule": {"enabled": True, "alertLabels": {"team": "data", "severity": "page"},
                                        "disabledAlerts": ["AmperityApiVersionDeprecated", "AmperityThrottled"]}})
    assert set(chosen) == set(alerts()) - {"AmperityApiVersionDeprecated", "AmperityThrottled"}
    for r in chosen.values():
        assert r["labels"] == {"team": "data", "severity": "page"}


def readme_alerts():
    """The README's alert table: alert, severity, for, expression."""
    rows = {}
    text = README.read_text()
    section = text[text.index("| alert | severity | for | expression |"):]
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        name, severity, duration, expr = (c.replace("\\|", "|").strip("`") for c in cells)
        rows[name.strip("`")] = (severity, duration, expr)
    return rows


def test_the_readme_lists_exactly_the_shipped_alerts():
    shipped = {name: (r["labels"]["severity"], r.get("for", "-"), r["expr"]) for name, r in alerts().items()}
    assert readme_alerts() == shipped


def dashboard(values=None):
    cm = one(render({"grafanaDashboard": {"enabled": True}, **(values or {})}), "ConfigMap")
    [(key, text)] = cm["data"].items()
    assert key.endswith(".json")
    return cm, json.loads(text)


def panels(d):
    return [p for p in d["panels"] if p["type"] != "row"]


def test_the_dashboard_configmap_is_found_by_the_grafana_sidecar():
    assert not kinds(render(), "ConfigMap")
    cm, _ = dashboard()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == RELEASE_NS
    cm, _ = dashboard({"grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                            "annotations": {"grafana_folder": "Operators"}}})
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Operators"}


def test_the_dashboard_is_the_file_with_the_installations_budget():
    source = json.loads(DASHBOARD.read_text())
    _, rendered = dashboard({"amperity": {"rateLimit": 8}})
    [budget] = [v for v in rendered["templating"]["list"] if v["name"] == "rate_limit"]
    assert budget["type"] == "constant" and budget["query"] == "8" and budget["current"]["value"] == "8"
    for v in source["templating"]["list"]:
        if v["name"] == "rate_limit":
            v.update(query="8", current={"text": "8", "value": "8"})
    assert rendered == source


def test_every_dashboard_query_names_exported_series():
    _, d = dashboard()
    exported = series()
    found = {}
    for p in panels(d):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            if t["expr"] == "vector($rate_limit)":
                continue  # the configured budget, drawn as a line
            if msgs := problems(t["expr"], exported):
                found[f"{p['title']}: {t['expr']}"] = msgs
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            if msgs := problems(v["query"]["query"], exported):
                found[f"variable {v['name']}"] = msgs
    assert not found, found


def test_the_dashboard_shows_what_an_operator_team_asks():
    _, d = dashboard()
    by_metric = {}
    for p in panels(d):
        for t in p["targets"]:
            for name in re.findall(r"amperity_operator_[a-z_]+", t["expr"]):
                by_metric.setdefault(name, []).append(p["title"])
    for metric, what in [
        ("amperity_operator_runs", "runs by phase"),
        ("amperity_operator_amperity_requests_total", "budget use"),
        ("amperity_operator_amperity_throttled_total", "429s"),
        ("amperity_operator_amperity_request_seconds_bucket", "request latency"),
        ("amperity_operator_reconcile_errors_total", "reconcile errors"),
        ("amperity_operator_runs_stalled", "runs waiting for a person"),
        ("amperity_operator_schedule_runs_total", "what schedules did"),
        ("amperity_operator_change_feed_looks_total", "the change feed"),
        ("amperity_operator_poll_failures_total", "poll failures"),
        ("amperity_operator_amperity_token_exchanges_total", "OAuth token exchanges"),
    ]:
        assert metric in by_metric, f"no panel shows {what}"
    # Runs end a few times a day: a rate over $__rate_interval would show nothing.
    for p in panels(d):
        for t in p["targets"]:
            if "workflow_duration_seconds" in t["expr"]:
                assert "$__rate_interval" not in t["expr"] and "[1d]" in t["expr"], t["expr"]
    budget = [p for p in panels(d) if any(t["expr"] == "vector($rate_limit)" for t in p["targets"])]
    assert len(budget) == 1 and "budget" in budget[0]["title"].lower()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert d["uid"] == "amperity-operator"


@pytest.mark.parametrize("label", sorted(TARGET_LABELS & {"namespace", "job"}))
def test_the_dashboard_filters_by_installation(label):
    _, d = dashboard()
    for p in panels(d):
        for t in p["targets"]:
            if t["expr"].startswith("vector("):
                continue
            assert f'{label}=~"${label}"' in t["expr"], (p["title"], t["expr"])
