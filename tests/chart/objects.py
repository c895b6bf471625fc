"""Finding things in rendered manifests, and the values that switch every option on."""
from render import render

RELEASE_NS = "amperity-system"
AGGREGATE_LABELS = ("rbac.authorization.k8s.io/aggregate-to-view", "rbac.authorization.k8s.io/aggregate-to-edit",
                    "rbac.authorization.k8s.io/aggregate-to-admin")

# Every option of the chart on at once (each with a non-default value where it has one).
ALL_ON = {
    "nameOverride": "awo",
    "revisionHistoryLimit": 5,
    "amperity": {
        "allowedEndpoints": ["https://*.amperity.com", "https://amperity-gw.corp.example:8443/api"],
        "tlsRoots": "system",
        "caBundle": {"configMapName": "corp-ca", "key": "bundle.pem"},
        "maxBodyBytes": 1048576,
        "changeFeed": False,
    },
    "controller": {"stopGraceSeconds": 300},
    "watchNamespaces": ["marketing", "finance"],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128"},
                 {"name": "NO_PROXY", "value": ".corp.example"}],
    "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    "crds": {"enabled": True, "keep": False},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "alertLabels": {"team": "data-platform"},
                       "disabledAlerts": ["AmperityApiVersionDeprecated"]},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Operators"}},
    "podDisruptionBudget": {"maxUnavailable": "", "minAvailable": 1},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "dns": {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
        "apiServer": {"cidrs": ["10.96.0.1/32", "172.20.0.10/32"], "ports": [443]},
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 3128, "protocol": "TCP"}]}],
    },
    "priorityClassName": "system-cluster-critical",
    "podLabels": {"team": "data-platform"},
    "podAnnotations": {"example.com/owner": "data-platform"},
    "podAntiAffinity": "hard",
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "operators", "effect": "NoSchedule"}],
}


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = kinds(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects rendered, expected one"
    return found[0]


def container(docs):
    deploy = one(docs, "Deployment")
    [c] = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, c


def pod_spec(values=None):
    deploy, _ = container(render(values))
    return deploy["spec"]["template"]["spec"]


def env(c):
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def is_user_role(d):
    """A ClusterRole for the people who create runs, aggregated into view/edit/admin."""
    labels = d["metadata"].get("labels", {})
    return d["kind"] == "ClusterRole" and any(labels.get(k) == "true" for k in AGGREGATE_LABELS)


def operator_roles(docs):
    """The operator's own Roles and ClusterRoles."""
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole") and not is_user_role(d)]
