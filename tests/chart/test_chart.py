"""The Helm chart, rendered and linted with Helm's own engine (helm-python-sdk), offline."""
import re

import helm_python
import pytest
import yaml

from objects import ALL_ON, RELEASE_NS, container, env, kinds, operator_roles
from render import CHART, render

REPO = CHART.parents[1]

# Exactly what the operator calls, and nothing more (the e2e suite checks that each
# rule is needed by removing it). The finalizer is added and removed with a
# server-side-apply patch of the resource itself, so no amperityworkflowruns/finalizers
# rule is needed (the same for schedules, whose runs' ownerReferences do not set
# blockOwnerDeletion, so no amperityworkflowschedules/finalizers rule either); the Lease
# is renewed with patches (kube-lease-manager), never updates.
RULES = [
    {"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowruns"],
     "verbs": ["get", "list", "watch", "patch", "delete", "create"]},
    {"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowruns/status"], "verbs": ["patch"]},
    {"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowschedules"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowschedules/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
def lease_rules(lease_name="amperity-operator"):
    """Create any Lease (RBAC cannot check a create's name), read and renew only the one."""
    return [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease_name],
             "verbs": ["get", "patch"]}]


LEASE_RULES = lease_rules()


def claims_rules(configmap="amperity-operator-claims"):
    """Create any ConfigMap (RBAC cannot check a create's name), read and replace only the ledger."""
    return [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [configmap],
             "verbs": ["get", "update"]}]


CLAIMS_RULES = claims_rules()


def lease_roles(docs):
    return [r for r in kinds(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]


def claims_roles(docs):
    return [r for r in kinds(docs, "Role") if r["metadata"]["name"].endswith("-claims")]


def watch_roles(docs):
    return [r for r in kinds(docs, "Role")
            if not r["metadata"]["name"].endswith(("-leader-election", "-claims"))]


def operator_cluster_roles(docs):
    return [r for r in operator_roles(docs) if r["kind"] == "ClusterRole"]


VARIANTS = {
    "defaults": {},
    "namespaces listed": {"watchNamespaces": ["marketing", "finance"]},
    "one namespace listed": {"watchNamespaces": ["marketing"]},
    "leader election off": {"leaderElection": {"enabled": False}, "replicas": 1},
    "namespaces listed, leader election off": {"watchNamespaces": ["marketing"], "leaderElection": {"enabled": False},
                                               "replicas": 1},
    "service monitor on": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "metrics service off": {"metrics": {"service": {"enabled": False}}},
    "text logs, debug": {"logFormat": "text", "logLevel": "debug"},
    "json logs": {"logFormat": "json"},
    "budget 10": {"amperity": {"rateLimit": 10}},
    "three replicas": {"replicas": 3},
    "existing service account": {"serviceAccount": {"create": False, "name": "custom"}},
    "tuning": {"controller": {"retryBackoffSeconds": 5, "stopGraceSeconds": 60}},
    "every option on": ALL_ON,
    "every option on, all namespaces": {**ALL_ON, "watchNamespaces": []},
    "every option off": {"crds": {"enabled": False}, "aggregatedRoles": {"enabled": False},
                         "podDisruptionBudget": {"enabled": False}, "podAntiAffinity": "none",
                         "metrics": {"service": {"enabled": False}}, "serviceAccount": {"create": False}},
    "CA bundle from a Secret, system roots": {"amperity": {"caBundle": {"secretName": "corp-ca"}, "tlsRoots": "system"}},
    "CRDs not kept": {"crds": {"keep": False}},
    "full name override": {"fullnameOverride": "awr-operator"},
    "release name without the chart's": {"replicas": 3},
    "image pinned by digest": {"image": {"repository": "registry.corp.example/amperity-operator",
                                         "digest": "sha256:" + "0123456789abcdef" * 4},
                               "imagePullSecrets": [{"name": "regcred"}]},
    "values an umbrella chart passes": {"global": {"imageRegistry": "registry.corp.example"}, "enabled": True},
}
# The release name each variant is installed as (default: amperity-operator).
RELEASE_NAMES = {"release name without the chart's": "platform"}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_renders_valid_manifests(name):
    chart = helm_python.Chart.load(str(CHART))
    try:
        raw = chart.render(VARIANTS[name], name=RELEASE_NAMES.get(name, "amperity-operator"), namespace=RELEASE_NS,
                           is_install=True)
    finally:
        chart.close()
    assert raw, "nothing rendered"
    for path, text in raw.items():
        if not text.strip() or path.endswith("NOTES.txt"):
            continue  # a template switched off by the values, or the notes shown after install
        docs = list(yaml.safe_load_all(text))
        for d in docs:
            # No empty document, no stray text: each one a Kubernetes object.
            assert isinstance(d, dict), f"{path} renders an empty or non-object document: {d!r}"
            assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), (path, d)
            assert yaml.safe_load(yaml.safe_dump(d)) == d
    docs = render(VARIANTS[name], namespace=RELEASE_NS, name=RELEASE_NAMES.get(name, "amperity-operator"))
    assert kinds(docs, "Deployment")
    # Names are unique per kind and namespace (a collision would make one overwrite another).
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), keys
    # Every namespaced object of the release itself lives in the release namespace.
    for d in docs:
        if d["kind"] in ("Deployment", "ServiceAccount", "Service", "ServiceMonitor", "PodDisruptionBudget",
                         "NetworkPolicy", "PrometheusRule"):
            assert d["metadata"]["namespace"] == RELEASE_NS, d["kind"]
    # Every object carries the release's labels, and the same name label.
    values = VARIANTS[name]
    for d in docs:
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE_NAMES.get(name, "amperity-operator"), d["kind"]
        assert labels.get("app.kubernetes.io/name") == values.get("nameOverride", "amperity-operator"), d["kind"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", d["kind"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_lint_passes_strict(name):
    report = helm_python.lint(str(CHART), VARIANTS[name], strict=True, namespace=RELEASE_NS)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, report


@pytest.mark.parametrize("kube_version", ["v1.20.0", "v1.25.0", "v1.33.0"])
def test_lint_passes_on_every_supported_kubernetes(kube_version):
    report = helm_python.lint(str(CHART), ALL_ON, strict=True, namespace=RELEASE_NS, kube_version=kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, report


def test_values_schema_rejects_bad_values():
    bad = [
        {"amperity": {"rateLimit": 11}},
        {"amperity": {"rateLimit": 0}},
        {"logFormat": "xml"},
        {"logFormat": "JSON"},
        {"logLevel": ""},
        {"global": "shared"},
        {"enabled": "yes"},
        {"image": {"digest": "latest"}},
        {"image": {"registry": "ghcr.io"}},
        {"replicas": -1},
        {"watchNamespaces": "marketing"},
        {"leaderElection": {"enabled": "yes"}},
        {"metrics": {"port": 0}},
        {"unknownValue": 1},
        {"controller": {"retryBackoffSeconds": 0}},
        {"controller": {"stopGraceSeconds": 0}},
        {"amperity": {"principal": "svc-k8s"}},  # the flag is gone
        {"amperity": {"allowInsecureHttp": True}},  # the flag is gone: allowedEndpoints says http://
        {"amperity": {"allowedEndpoints": []}},
        {"amperity": {"allowedEndpoints": "https://*.amperity.com"}},
        {"amperity": {"allowedEndpoints": ["*.amperity.com"]}},
        {"amperity": {"allowedEndpoints": ["https://a.amperity.com,https://b.amperity.com"]}},
        {"amperity": {"tlsRoots": "webpki"}},
        {"amperity": {"maxBodyBytes": 0}},
        {"amperity": {"changeFeed": "yes"}},
        {"amperity": {"caBundle": {"key": ""}}},
        {"amperity": {"caBundle": {"configMapName": "Corp CA"}}},
        {"amperity": {"caBundle": {"secret": "corp-ca"}}},
        {"revisionHistoryLimit": -1},
        {"nameOverride": "Not_A_Name"},
        {"extraEnv": [{"value": "no name"}]},
        {"extraEnv": {"HTTPS_PROXY": "http://proxy:3128"}},
        {"extraVolumeMounts": [{"name": "scratch"}]},
        {"podAntiAffinity": "sometimes"},
        {"podLabels": {"team": 1}},
        {"topologySpreadConstraints": [{"maxSkew": 1}]},
        {"podDisruptionBudget": {"minAvailable": "half"}},
        {"podDisruptionBudget": {"maxUnavailable": -1}},
        {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["kubernetes.default"]}}},
        {"networkPolicy": {"amperity": {"ports": []}}},
        {"networkPolicy": {"amperity": {"ipBlocks": [{"except": ["169.254.0.0/16"]}]}}},
        {"crds": {"enabled": "true"}},
        {"crds": {"install": True}},
        {"aggregatedRoles": {"enabled": 1}},
        {"prometheusRule": {"disabledAlerts": "AmperityThrottled"}},
        {"prometheusRule": {"alertLabels": {"priority": 1}}},
        {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
    ]
    for values in bad:
        with pytest.raises(helm_python.HelmError):
            render(values)


def test_several_replicas_without_leader_election_are_refused():
    with pytest.raises(helm_python.HelmError, match="replicas: 1"):
        render({"leaderElection": {"enabled": False}})


def test_pod_security_and_probes():
    deploy, c = container(render())
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert deploy["spec"]["replicas"] == 2
    assert c["args"] == ["run"]
    assert c["image"] == "ghcr.io/amperity-operator/amperity-operator:0.1.0"
    assert pod["serviceAccountName"] == "amperity-operator"
    # The selector matches the pod template.
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_default_environment():
    _, c = container(render())
    assert env(c) == {
        "METRICS_ADDR": "0.0.0.0:8080",
        "RUST_LOG": "info",
        "LOG_FORMAT": "json",
        "AMPERITY_RATE_LIMIT": "5",
        "AMPERITY_DEFAULT_ENDPOINT": "https://{tenant}.amperity.com/api",
        "AMPERITY_API_VERSION": "2024-04-01",
        "AMPERITY_REQUEST_TIMEOUT": "30",
        "AMPERITY_ALLOWED_ENDPOINTS": "https://*.amperity.com",
        "AMPERITY_MAX_BODY_BYTES": "8388608",
        "AMPERITY_TLS_ROOTS": "bundled",
        # No CA bundle: AMPERITY_CA_FILE is unset.
        "AMPERITY_CHANGE_FEED": "true",
        "AMPERITY_CONNECTIONS": "false",
        "RETRY_BACKOFF_SECS": "30",
        "STALLED_RECHECK_SECS": "30",
        "START_SETTLE_SECS": "60",
        "DELETION_GRACE_SECS": "120",
        "STOP_GRACE_SECS": "600",
        "CONTROLLER_CONCURRENCY": "64",
        "LEADER_ELECTION": "true",
        "LEASE_NAME": "amperity-operator",
        "LEASE_SECONDS": "15",
        "CLAIMS_CONFIGMAP": "amperity-operator-claims",
        # All namespaces: WATCH_NAMESPACES is unset (an empty value would name namespace "").
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }


def test_environment_follows_values():
    _, c = container(render({
        "amperity": {"rateLimit": 7, "defaultEndpoint": "https://app.amperity.com/api", "apiVersion": "2025-01-01",
                     "allowedEndpoints": ["https://*.amperity.com", "http://amperity-sim.test.svc:8470"],
                     "maxBodyBytes": 16777216, "tlsRoots": "system", "changeFeed": False,
                     "caBundle": {"secretName": "corp-ca", "key": "roots.pem"}},
        "logFormat": "text", "logLevel": "debug",
        "watchNamespaces": ["a", "b"],
        "leaderElection": {"leaseName": "awr-leader"},
        "controller": {"retryBackoffSeconds": 5, "stalledRecheckSeconds": 6, "startSettleSeconds": 7,
                       "deletionGraceSeconds": 8, "concurrency": 9, "stopGraceSeconds": 10},
        "metrics": {"port": 9090},
    }))
    e = env(c)
    assert e["AMPERITY_RATE_LIMIT"] == "7"
    assert e["AMPERITY_DEFAULT_ENDPOINT"] == "https://app.amperity.com/api"
    assert e["AMPERITY_API_VERSION"] == "2025-01-01"
    assert e["AMPERITY_ALLOWED_ENDPOINTS"] == "https://*.amperity.com,http://amperity-sim.test.svc:8470"
    assert e["AMPERITY_MAX_BODY_BYTES"] == "16777216"
    assert e["AMPERITY_TLS_ROOTS"] == "system"
    assert e["AMPERITY_CHANGE_FEED"] == "false"
    assert e["AMPERITY_CA_FILE"] == "/etc/amperity-operator/ca/roots.pem"
    assert e["LOG_FORMAT"] == "text" and e["RUST_LOG"] == "debug"
    # The binary's older name for the filter is not set: RUST_LOG alone decides.
    assert "LOG_LEVEL" not in e
    assert e["WATCH_NAMESPACES"] == "a,b"
    assert e["LEASE_NAME"] == "awr-leader"
    assert [e[k] for k in ("RETRY_BACKOFF_SECS", "STALLED_RECHECK_SECS", "START_SETTLE_SECS", "DELETION_GRACE_SECS",
                           "CONTROLLER_CONCURRENCY", "STOP_GRACE_SECS")] == ["5", "6", "7", "8", "9", "10"]
    assert e["METRICS_ADDR"] == "0.0.0.0:9090"
    assert c["ports"][0]["containerPort"] == 9090


def run_flag_attrs():
    """The `#[arg(...)]` attributes of the flags `amperity-operator run` reads, from src/cli.rs."""
    source = (REPO / "src" / "cli.rs").read_text()
    attrs = []
    for struct in ("Cli", "RunArgs", "AmperityArgs"):
        m = re.search(r"pub struct %s \{(.*?)\n\}" % struct, source, re.S)
        assert m, f"struct {struct} not found in src/cli.rs"
        attrs += re.findall(r"#\[arg\((.*?)\)\]\n", m.group(1), re.S)
    return attrs


def cli_env_vars():
    """The env twins of the flags `amperity-operator run` reads."""
    return {m.group(1) for a in run_flag_attrs() if (m := re.search(r'env = "([A-Z0-9_]+)"', a))}


def cli_defaults():
    """Each env twin of a `run` flag with its default, as src/cli.rs declares it."""
    found = {}
    for attr in run_flag_attrs():
        name = re.search(r'env = "([A-Z0-9_]+)"', attr)
        default = re.search(r'default_value(?:_t)? = ("[^"]*"|[^,]+)', attr)
        if name and default:
            found[name.group(1)] = rust_default(default.group(1).strip())
    return found


def rust_default(expr):
    """A default as the binary reads it: "text" as is, `LogFormat::Text` as clap's value
    `text`, a product such as `8 * 1024 * 1024` as its value."""
    if expr.startswith('"'):
        return expr.strip('"')
    if m := re.fullmatch(r"[A-Za-z]+::([A-Za-z]+)", expr):
        return re.sub(r"(?<!^)([A-Z])", r"-\1", m.group(1)).lower()
    if re.fullmatch(r"[0-9_]+( \* [0-9_]+)*", expr):
        product = 1
        for factor in expr.split(" * "):
            product *= int(factor.replace("_", ""))
        return str(product)
    return expr


# Where the chart deliberately differs from the binary: log collectors in a cluster read JSON.
CHART_OVERRIDES = {"LOG_FORMAT": ("json", "text")}


def test_chart_defaults_are_the_binarys_defaults():
    _, c = container(render())
    rendered = {k: v for k, v in env(c).items() if isinstance(v, str)}
    defaults = cli_defaults()
    assert "CONTROLLER_CONCURRENCY" in defaults and "AMPERITY_RATE_LIMIT" in defaults, defaults
    differing = {k: (rendered[k], defaults[k]) for k in rendered if k in defaults and rendered[k] != defaults[k]}
    assert differing == CHART_OVERRIDES, "values.yaml and src/cli.rs disagree on a default: (chart, binary)"


def test_the_chart_sets_only_variables_the_binary_reads_and_all_of_them():
    _, c = container(render({"amperity": {"caBundle": {"configMapName": "corp-ca"}}, "watchNamespaces": ["a"]}))
    templated = set(env(c))
    accepted = cli_env_vars()
    assert templated - accepted == set(), "the chart sets variables `run` does not read"
    assert accepted - templated == set(), "flags of `run` with no value in the chart: add them to values.yaml"


def test_cluster_rbac_grants_exactly_what_the_code_uses():
    docs = render(namespace=RELEASE_NS)
    [role] = operator_cluster_roles(docs)
    assert role["rules"] == RULES
    [binding] = kinds(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "amperity-operator", "namespace": RELEASE_NS}]
    # In the release namespace: the Lease, and the claims ledger's ConfigMap.
    lease, claims = sorted(kinds(docs, "Role"), key=lambda r: r["metadata"]["name"].endswith("-claims"))
    assert lease["rules"] == LEASE_RULES
    assert claims["rules"] == CLAIMS_RULES
    for role in (lease, claims):
        assert role["metadata"]["namespace"] == RELEASE_NS
        [role_binding] = [b for b in kinds(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]]
        assert role_binding["metadata"]["namespace"] == RELEASE_NS
        assert role_binding["subjects"] == binding["subjects"]
    assert len(kinds(docs, "RoleBinding")) == 2


@pytest.mark.parametrize("namespaces", [["marketing"], ["marketing", "finance", "sales"]])
def test_listed_namespaces_get_a_role_each_and_nothing_cluster_wide(namespaces):
    docs = render({"watchNamespaces": namespaces}, namespace=RELEASE_NS)
    # The only ClusterRoles are the users' aggregated ones, which grant the operator nothing.
    assert not operator_cluster_roles(docs) and not kinds(docs, "ClusterRoleBinding")
    roles = watch_roles(docs)
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    for r in roles:
        assert r["rules"] == RULES
    bindings = {b["metadata"]["namespace"]: b for b in kinds(docs, "RoleBinding")
                if not b["metadata"]["name"].endswith(("-leader-election", "-claims"))}
    assert set(bindings) == set(namespaces)
    for r in roles:
        b = bindings[r["metadata"]["namespace"]]
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": r["metadata"]["name"]}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "amperity-operator", "namespace": RELEASE_NS}]
    # The Lease Role stays in the release namespace.
    [lease] = lease_roles(docs)
    assert lease["metadata"]["namespace"] == RELEASE_NS


def test_leader_election_off_has_no_lease_role():
    docs = render({"leaderElection": {"enabled": False}, "replicas": 1})
    assert not lease_roles(docs)
    assert not [b for b in kinds(docs, "RoleBinding") if "leader" in b["metadata"]["name"]]
    deploy, c = container(docs)
    assert env(c)["LEADER_ELECTION"] == "false"
    assert deploy["spec"]["replicas"] == 1


def test_the_lease_role_names_the_lease():
    [lease] = lease_roles(render({"leaderElection": {"leaseName": "awr-leader"}}))
    assert lease["rules"] == lease_rules("awr-leader")


@pytest.mark.parametrize("values", [{}, {"leaderElection": {"enabled": False}, "replicas": 1},
                                    {"watchNamespaces": ["marketing"]}])
def test_the_claims_ledger_role_names_the_configmap_whatever_else_is_on(values):
    docs = render({**values, "claimsConfigMap": "awr-claims"})
    [role] = claims_roles(docs)
    assert role["metadata"]["namespace"] == RELEASE_NS
    assert role["rules"] == claims_rules("awr-claims")
    [binding] = [b for b in kinds(docs, "RoleBinding") if b["metadata"]["name"].endswith("-claims")]
    assert binding["metadata"]["namespace"] == RELEASE_NS
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "amperity-operator", "namespace": RELEASE_NS}]
    _, c = container(docs)
    assert env(c)["CLAIMS_CONFIGMAP"] == "awr-claims"


def test_no_rbac_rule_grants_more_than_the_table():
    for values in VARIANTS.values():
        for d in operator_roles(render(values)):
            for rule in d["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
                assert rule in RULES or rule in LEASE_RULES or rule in CLAIMS_RULES, rule


def test_existing_service_account_is_used_not_created():
    docs = render({"serviceAccount": {"create": False, "name": "custom"}})
    assert not kinds(docs, "ServiceAccount")
    deploy, _ = container(docs)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "custom"
    for b in kinds(docs, "ClusterRoleBinding") + kinds(docs, "RoleBinding"):
        assert b["subjects"][0]["name"] == "custom"


def test_metrics_service_and_service_monitor():
    docs = render()
    [svc] = kinds(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    deploy, _ = container(docs)
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert not kinds(docs, "ServiceMonitor")
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    [sm] = kinds(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    # No honorLabels: target labels (namespace, job, endpoint, ...) are Prometheus' own.
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    [svc] = kinds(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert not kinds(render({"metrics": {"service": {"enabled": False}}}), "Service")


def test_every_value_is_documented():
    """Each key in values.yaml has a comment on it or right above it, except inside the
    free-form Kubernetes objects (resources, security contexts) the comment above covers."""
    free_form = {"resources", "podSecurityContext", "securityContext"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    inside = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        if indent == 0:
            inside = key if key in free_form else None
        elif inside:
            continue
        previous = lines[i - 1].strip() if i else ""
        assert "#" in line or previous.startswith("#"), f"values.yaml line {i + 1}: {key} is not documented"
