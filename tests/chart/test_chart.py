"""The Helm chart, rendered and linted with Helm's own engine, offline."""
import pathlib

import helm_python
import pytest
import yaml

from render import CHART, render

REPO = CHART.parents[1]

RULES = [
    {"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowruns"],
     "verbs": ["get", "list", "watch", "patch", "delete"]},
    {"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowruns/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
LEASE_RULES = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]}]


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def container(docs):
    [deploy] = kinds(docs, "Deployment")
    [c] = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, c


def env(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


VARIANTS = {
    "defaults": {},
    "namespaces listed": {"watchNamespaces": ["marketing", "finance"]},
    "leader election off": {"leaderElection": {"enabled": False}},
    "service monitor on": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "metrics service off": {"metrics": {"service": {"enabled": False}}},
    "json logs, debug": {"logFormat": "text", "logLevel": "debug"},
    "budget 10": {"amperity": {"rateLimit": 10}},
    "one replica": {"replicas": 1},
    "existing service account": {"serviceAccount": {"create": False, "name": "custom"}},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_renders_valid_manifests(name):
    docs = render(VARIANTS[name])
    assert docs, "nothing rendered"
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d
        # Round-trips as YAML: nothing broken or empty.
        assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_lint_passes():
    report = helm_python.lint(str(CHART), strict=False)
    errors = [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
    assert not errors, report


def test_values_schema_rejects_bad_values():
    with pytest.raises(helm_python.HelmError):
        render({"amperity": {"rateLimit": 11}})
    with pytest.raises(helm_python.HelmError):
        render({"logFormat": "xml"})


def test_pod_security_and_probes():
    deploy, c = container(render())
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert deploy["spec"]["replicas"] == 2
    assert c["args"] == ["run"]


def test_environment_follows_values():
    _, c = container(render({"amperity": {"rateLimit": 7}, "logFormat": "text", "watchNamespaces": ["a", "b"]}))
    e = env(c)
    assert e["AMPERITY_RATE_LIMIT"] == "7"
    assert e["LOG_FORMAT"] == "text"
    assert e["WATCH_NAMESPACES"] == "a,b"
    assert e["METRICS_ADDR"] == "0.0.0.0:8080"
    assert e["LEADER_ELECTION"] == "true"
    assert e["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert e["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_cluster_rbac_grants_exactly_what_the_code_uses():
    docs = render()
    [role] = kinds(docs, "ClusterRole")
    assert role["rules"] == RULES
    [binding] = kinds(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "amperity-operator", "namespace": "amperity-system"}]
    [lease] = kinds(docs, "Role")
    assert lease["metadata"]["namespace"] == "amperity-system"
    assert lease["rules"] == LEASE_RULES


def test_listed_namespaces_get_a_role_each_and_no_cluster_role():
    docs = render({"watchNamespaces": ["marketing", "finance"]})
    assert not kinds(docs, "ClusterRole") and not kinds(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in kinds(docs, "Role") if "leader" not in r["metadata"]["name"]}
    assert set(roles) == {"marketing", "finance"}
    for r in roles.values():
        assert r["rules"] == RULES
    bindings = [b for b in kinds(docs, "RoleBinding") if "leader" not in b["metadata"]["name"]]
    assert {b["metadata"]["namespace"] for b in bindings} == {"marketing", "finance"}


def test_leader_election_off_has_no_lease_role():
    docs = render({"leaderElection": {"enabled": False}})
    assert not [r for r in kinds(docs, "Role") if r["rules"] == LEASE_RULES]
    _, c = container(docs)
    assert env(c)["LEADER_ELECTION"] == "false"


def test_metrics_service_and_service_monitor():
    docs = render()
    [svc] = kinds(docs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert not kinds(docs, "ServiceMonitor")
    docs = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    [sm] = kinds(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def test_chart_crd_is_the_generated_crd():
    chart_crd = (CHART / "crds" / "amperityworkflowruns.amperity.dev.yaml").read_bytes()
    generated = (REPO / "crds" / "amperityworkflowruns.amperity.dev.yaml").read_bytes()
    assert chart_crd == generated, "copy crds/ into charts/amperity-operator/crds/"
