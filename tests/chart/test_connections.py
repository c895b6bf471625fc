"""`amperity.connections`: the operator serves AmperityConnection and
ClusterAmperityConnection, with exactly the RBAC that takes (and nothing when off)."""
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
