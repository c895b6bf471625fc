"""Roles for the people who create runs, aggregated into the built-in view, edit and
admin ClusterRoles (the end-to-end suite shows an `edit` user creating runs with them)."""
from objects import is_user_role, kinds
from render import render

RESOURCES = ["amperityworkflowruns", "amperityworkflowschedules"]
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]


def user_roles(values=None):
    return {d["metadata"]["name"]: d for d in render(values) if is_user_role(d)}


def aggregated_into(role):
    labels = role["metadata"]["labels"]
    return sorted(k.rsplit("-", 1)[1] for k, v in labels.items() if k.startswith("rbac.authorization.k8s.io/aggregate-to-")
                  and v == "true")


def test_viewers_read_runs_and_schedules_and_their_status():
    role = user_roles()["amperity-operator-view"]
    assert aggregated_into(role) == ["admin", "edit", "view"]
    assert role["rules"] == [{"apiGroups": ["amperity.dev"], "verbs": READ,
                              "resources": [r for res in RESOURCES for r in (res, f"{res}/status")]}]


def test_editors_and_admins_create_change_and_delete_runs_and_schedules_but_never_status():
    role = user_roles()["amperity-operator-edit"]
    assert aggregated_into(role) == ["admin", "edit"]
    assert role["rules"] == [{"apiGroups": ["amperity.dev"], "resources": RESOURCES, "verbs": WRITE}]


def test_user_roles_are_only_aggregated_never_bound():
    docs = render()
    names = set(user_roles())
    assert names == {"amperity-operator-view", "amperity-operator-edit"}
    for binding in kinds(docs, "ClusterRoleBinding") + kinds(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] not in names
    # Nothing else in the chart reaches beyond amperity.dev for users.
    for role in user_roles().values():
        for rule in role["rules"]:
            assert rule["apiGroups"] == ["amperity.dev"] and "*" not in rule["verbs"]


def test_user_roles_follow_the_release_and_can_be_left_out():
    assert set(user_roles({"fullnameOverride": "awr"})) == {"awr-view", "awr-edit"}
    assert set(user_roles({"watchNamespaces": ["marketing"]})) == {"amperity-operator-view", "amperity-operator-edit"}
    assert user_roles({"aggregatedRoles": {"enabled": False}}) == {}
