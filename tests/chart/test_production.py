"""What a production install expects of the chart: disruption budget, spreading, pod
options, a CA bundle, proxies, the NetworkPolicy, name overrides and the notes."""
import helm_python
import pytest
import yaml

from objects import ALL_ON, RELEASE_NS, container, env, kinds, one, pod_spec
from render import CHART, render

SELECTOR = {"app.kubernetes.io/name": "amperity-operator", "app.kubernetes.io/instance": "amperity-operator"}


def notes(values=None):
    chart = helm_python.Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name="amperity-operator", namespace=RELEASE_NS, is_install=True)
    finally:
        chart.close()
    [text] = [t for path, t in rendered.items() if path.endswith("NOTES.txt")]
    return text


def test_chart_declares_the_kubernetes_versions_it_supports():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    # 1.20 is what the end-to-end suite runs on.
    assert chart["kubeVersion"] == ">=1.20.0-0"
    assert not (CHART / "crds").exists(), "Helm never upgrades crds/: the CRDs are templates (crds.enabled)"


def test_a_disruption_budget_keeps_a_replica_through_drains():
    pdb = one(render(), "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}
    deploy, _ = container(render())
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    pdb = one(render({"podDisruptionBudget": {"maxUnavailable": "", "minAvailable": "50%"}}), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in pdb["spec"]
    pdb = one(render({"podDisruptionBudget": {"maxUnavailable": 0}}), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 0, "0 is a bound, not unset"
    assert not kinds(render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget")


@pytest.mark.parametrize("bounds, message", [
    ({"minAvailable": 1}, "not both"),
    ({"maxUnavailable": ""}, "set minAvailable or maxUnavailable"),
])
def test_a_disruption_budget_needs_exactly_one_bound(bounds, message):
    with pytest.raises(helm_python.HelmError, match=message):
        render({"podDisruptionBudget": bounds})


def test_replicas_spread_across_nodes_by_default():
    affinity = pod_spec()["affinity"]
    [preferred] = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                            "labelSelector": {"matchLabels": SELECTOR}}}
    hard = pod_spec({"podAntiAffinity": "hard"})["affinity"]["podAntiAffinity"]
    assert hard == {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": SELECTOR}}]}
    assert "affinity" not in pod_spec({"podAntiAffinity": "none"})
    # An affinity of one's own replaces the preset.
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}
    assert pod_spec({"affinity": own})["affinity"] == own


def test_topology_spread_constraints_count_the_releases_pods():
    zone = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    own_selector = {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"tier": "operators"}}}
    spread = pod_spec({"topologySpreadConstraints": [zone, own_selector]})["topologySpreadConstraints"]
    assert spread == [{**zone, "labelSelector": {"matchLabels": SELECTOR}}, own_selector]
    assert "topologySpreadConstraints" not in pod_spec()


def test_pod_options():
    deploy, _ = container(render())
    assert deploy["spec"]["revisionHistoryLimit"] == 3
    assert "priorityClassName" not in deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["template"]["metadata"]["labels"] == SELECTOR
    deploy, _ = container(render({
        "revisionHistoryLimit": 0, "priorityClassName": "system-cluster-critical",
        "podLabels": {"team": "data", "app.kubernetes.io/name": "hijack"},
        "podAnnotations": {"example.com/owner": "data"},
    }))
    template = deploy["spec"]["template"]
    assert deploy["spec"]["revisionHistoryLimit"] == 0
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    # podLabels add labels; they cannot take the pods away from the Deployment's selector.
    assert template["metadata"]["labels"] == {**SELECTOR, "team": "data"}
    assert template["metadata"]["annotations"] == {"example.com/owner": "data"}


def test_extra_env_volumes_and_mounts():
    deploy, c = container(render(ALL_ON))
    e = env(c)
    assert e["HTTPS_PROXY"] == "http://proxy.corp.example:3128" and e["NO_PROXY"] == ".corp.example"
    # Extra variables come after the chart's own.
    assert [x["name"] for x in c["env"]][-2:] == ["HTTPS_PROXY", "NO_PROXY"]
    assert {"name": "scratch", "mountPath": "/scratch"} in c["volumeMounts"]
    assert {"name": "scratch", "emptyDir": {}} in deploy["spec"]["template"]["spec"]["volumes"]
    _, c = container(render())
    assert "volumeMounts" not in c


@pytest.mark.parametrize("name", ["AMPERITY_RATE_LIMIT", "AMPERITY_CA_FILE", "POD_NAME"])
def test_extra_env_cannot_shadow_a_value(name):
    values = {"extraEnv": [{"name": name, "value": "x"}], "amperity": {"caBundle": {"configMapName": "corp-ca"}}}
    with pytest.raises(helm_python.HelmError, match=f"extraEnv sets {name}.*values.yaml"):
        render(values)


@pytest.mark.parametrize("source, volume", [
    ({"configMapName": "corp-ca"}, {"configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
    ({"secretName": "corp-ca", "key": "roots.pem"},
     {"secret": {"secretName": "corp-ca", "items": [{"key": "roots.pem", "path": "roots.pem"}]}}),
])
def test_a_ca_bundle_is_mounted_read_only_and_named_to_the_operator(source, volume):
    deploy, c = container(render({"amperity": {"caBundle": source}}))
    key = source.get("key", "ca.crt")
    assert env(c)["AMPERITY_CA_FILE"] == f"/etc/amperity-operator/ca/{key}"
    assert c["volumeMounts"] == [{"name": "ca-bundle", "mountPath": "/etc/amperity-operator/ca", "readOnly": True}]
    assert deploy["spec"]["template"]["spec"]["volumes"] == [{"name": "ca-bundle", **volume}]


def test_a_ca_bundle_comes_from_one_source():
    with pytest.raises(helm_python.HelmError, match="configMapName or secretName, not both"):
        render({"amperity": {"caBundle": {"configMapName": "a", "secretName": "b"}}})


def test_the_network_policy_allows_dns_the_api_server_amperity_and_scrapes_only():
    assert not kinds(render(), "NetworkPolicy")
    policy = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": SELECTOR}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    dns, api, amperity = spec["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    # The API server's address unknown: any but link-local and cloud metadata ones.
    assert api == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}], "to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
        {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}}]}
    # Amperity by address: anything on 443 but link-local and cloud metadata addresses.
    assert amperity == {"ports": [{"port": 443, "protocol": "TCP"}], "to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
        {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}}]}

    spec = one(render(ALL_ON), "NetworkPolicy")["spec"]
    policy_values = ALL_ON["networkPolicy"]
    assert spec["ingress"][0]["from"] == policy_values["metricsFrom"]
    dns, api, amperity, proxy = spec["egress"]
    assert dns["to"] == policy_values["dns"]["to"]
    assert api == {"ports": [{"port": 443, "protocol": "TCP"}],
                   "to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.20.0.10/32"}}]}
    assert proxy == policy_values["extraEgress"][0]


def test_the_metrics_port_the_policy_opens_is_the_containers():
    docs = render({"networkPolicy": {"enabled": True}, "metrics": {"port": 9090}})
    _, c = container(docs)
    [port] = c["ports"]
    assert port["name"] == "metrics" and port["containerPort"] == 9090
    assert one(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]


@pytest.mark.parametrize("values, release, full", [
    ({}, "amperity-operator", "amperity-operator"),
    ({}, "platform", "platform-amperity-operator"),
    ({}, "amperity-operator-prod", "amperity-operator-prod"),
    ({"nameOverride": "awo"}, "platform", "platform-awo"),
    ({"fullnameOverride": "awr-operator"}, "platform", "awr-operator"),
])
def test_names_follow_the_overrides(values, release, full):
    docs = render(values, name=release)
    deploy, _ = container(docs)
    assert deploy["metadata"]["name"] == full
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == full
    name_label = values.get("nameOverride", "amperity-operator")
    assert deploy["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name_label,
                                                         "app.kubernetes.io/instance": release}
    for d in docs:
        if d["kind"] != "CustomResourceDefinition":
            assert d["metadata"]["name"].startswith(full), (d["kind"], d["metadata"]["name"])


def test_notes_tell_how_to_check_and_use_the_install():
    text = notes()
    assert "kubectl -n amperity-system rollout status deployment/amperity-operator" in text
    assert "https://*.amperity.com" in text and "every namespace" in text
    assert "kubectl -n NAMESPACE get awr -o wide" in text
    assert "edit or admin role" in text
    assert "crds" not in text
    text = notes({"crds": {"enabled": False}, "watchNamespaces": ["marketing", "finance"], "aggregatedRoles":
                  {"enabled": False}, "networkPolicy": {"enabled": True}})
    assert "the namespaces marketing, finance" in text
    assert "crds.enabled is false" in text and "--show-only templates/crds.yaml" in text
    assert "edit or admin role" not in text
    assert "networkPolicy.extraEgress" in text
    assert "deletes the CRDs and every run" in notes({"crds": {"keep": False}})
