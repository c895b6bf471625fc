"""`amperity.connections`: the operator serves AmperityConnection and
ClusterAmperityConnection, with exactly the RBAC that takes (and nothing when off)."""
import copy
import pathlib
import re

import helm_python
import pytest
import yaml

from objects import RELEASE_NS, is_user_role, kinds, operator_roles
from render import render

ON = {"amperity": {"connections": True}}
NAMESPACED = [
    {"apiGroups": ["amperity.dev"], "resources": ["amperityconnections"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["amperity.dev"], "resources": ["amperityconnections/status"], "verbs": ["patch"]},
]
CLUSTER = [
    {"apiGroups": ["amperity.dev"], "resources": ["clusteramperityconnections"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["amperity.dev"], "resources": ["clusteramperityconnections/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]


def env(docs):
    [deploy] = kinds(docs, "Deployment")
    [c] = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def rules_of(docs, name):
    [role] = [r for r in operator_roles(docs) if r["metadata"]["name"] == name]
    return role["rules"]


def test_off_by_default_grants_nothing_about_connections():
    docs = render()
    assert env(docs)["AMPERITY_CONNECTIONS"] == "false"
    for role in operator_roles(docs) + [d for d in docs if is_user_role(d)]:
        for rule in role["rules"]:
            assert not any("connection" in r for r in rule["resources"]), rule
            assert "namespaces" not in rule["resources"], rule


def test_on_the_operator_reads_connections_and_namespaces():
    docs = render(ON, namespace=RELEASE_NS)
    assert env(docs)["AMPERITY_CONNECTIONS"] == "true"
    operator = rules_of(docs, "amperity-operator")
    assert all(rule in operator for rule in NAMESPACED)
    assert rules_of(docs, "amperity-operator-connections") == CLUSTER
    [binding] = [b for b in kinds(docs, "ClusterRoleBinding") if b["metadata"]["name"] == "amperity-operator-connections"]
    assert binding["roleRef"]["name"] == "amperity-operator-connections"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "amperity-operator", "namespace": RELEASE_NS}]
    # Watching all namespaces, the operator already reads Secrets everywhere.
    assert not [r for r in kinds(docs, "Role") if r["metadata"]["name"].endswith("connection-secrets")]


def test_on_with_listed_namespaces_cluster_connection_secrets_are_read_in_the_release_namespace():
    docs = render({**ON, "watchNamespaces": ["marketing"]}, namespace=RELEASE_NS)
    [secrets] = [r for r in kinds(docs, "Role") if r["metadata"]["name"] == "amperity-operator-connection-secrets"]
    assert secrets["metadata"]["namespace"] == RELEASE_NS
    assert secrets["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert rules_of(docs, "amperity-operator-connections") == CLUSTER


def test_editors_create_namespaced_connections_and_viewers_read_both():
    roles = {d["metadata"]["name"]: d for d in render(ON) if is_user_role(d)}
    [edit] = roles["amperity-operator-edit"]["rules"]
    assert "amperityconnections" in edit["resources"]
    assert not any(r.startswith("clusteramperity") for r in edit["resources"])
    view = roles["amperity-operator-view"]["rules"]
    read = [r for rule in view for r in rule["resources"] if "get" in rule["verbs"]]
    for resource in ["amperityconnections", "amperityconnections/status", "clusteramperityconnections",
                     "clusteramperityconnections/status"]:
        assert resource in read, resource


PLATFORM = {
    "amperity": {
        "connections": True,
        "clusterConnections": [
            {
                "name": "socktown",
                "tenant": "socktown",
                "tokenSecretRef": {"name": "socktown-api"},
                "namespaceSelector": {"matchLabels": {"amperity.dev/tenant": "socktown"}},
            },
            {
                "name": "acme-eu",
                "tenant": "acme",
                "endpoint": "https://app.amperity.com/api",
                "requestsPerSecond": 4,
                "tokenSecretRef": {"name": "acme", "key": "api-token", "namespace": "platform"},
                "namespaceSelector": {},
            },
        ],
    }
}


def crd_schema(kind):
    path = pathlib.Path(__file__).parents[2] / "crds" / f"{kind.lower()}s.amperity.dev.yaml"
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def conforms(value, schema, path):
    """The CRD's structural rules the chart could break: known fields, required
    ones, types, enums and bounds (not its CEL)."""
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), path
        known = schema.get("properties")
        for key in schema.get("required", []):
            assert key in value, f"{path}.{key} is required"
        for key, v in value.items():
            if known is not None:
                assert key in known, f"{path}.{key} is not a field"
                conforms(v, known[key], f"{path}.{key}")
    elif kind == "string":
        assert isinstance(value, str), path
        assert len(value) <= schema.get("maxLength", len(value)), path
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{path}: {value!r}"
    elif kind == "integer":
        assert isinstance(value, int), path
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), path
    elif kind == "array":
        for i, v in enumerate(value):
            conforms(v, schema["items"], f"{path}[{i}]")


def test_cluster_connections_from_values_are_what_the_crd_accepts():
    docs = render(PLATFORM, namespace=RELEASE_NS)
    made = kinds(docs, "ClusterAmperityConnection")
    assert [c["metadata"]["name"] for c in made] == ["socktown", "acme-eu"]
    schema = crd_schema("ClusterAmperityConnection")
    for c in made:
        assert "namespace" not in c["metadata"], "cluster-scoped"
        assert c["metadata"]["labels"]["app.kubernetes.io/instance"] == "amperity-operator"
        conforms(c["spec"], schema["properties"]["spec"], "spec")
    socktown, acme = made
    # The Secret is in the release namespace unless the values say otherwise.
    assert socktown["spec"]["tokenSecretRef"] == {"name": "socktown-api", "namespace": RELEASE_NS}
    assert socktown["spec"]["namespaceSelector"] == {"matchLabels": {"amperity.dev/tenant": "socktown"}}
    assert "endpoint" not in socktown["spec"] and "requestsPerSecond" not in socktown["spec"]
    assert acme["spec"]["tokenSecretRef"] == {"name": "acme", "key": "api-token", "namespace": "platform"}
    assert acme["spec"]["namespaceSelector"] == {}, "{} chooses every namespace"
    assert acme["spec"]["requestsPerSecond"] == 4
    assert acme["spec"]["endpoint"] == "https://app.amperity.com/api"


def test_cluster_connections_need_connections_served_and_valid_values():
    assert kinds(render(), "ClusterAmperityConnection") == []
    off = copy.deepcopy(PLATFORM)
    off["amperity"]["connections"] = False
    with pytest.raises(helm_python.HelmError, match="amperity.connections: true"):
        render(off)
    for broken in [
        {"namespaceSelector": None},
        {"requestsPerSecond": 11},
        {"tenant": "not a tenant"},
        {"tokenSecretRef": {"key": "token"}},
        {"surprise": True},
    ]:
        values = copy.deepcopy(PLATFORM)
        item = values["amperity"]["clusterConnections"][0]
        item.update(broken)
        if broken.get("namespaceSelector", 0) is None:
            del item["namespaceSelector"]
        with pytest.raises(helm_python.HelmError):
            render(values)
