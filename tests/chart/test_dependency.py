"""The chart as a dependency of an umbrella chart, and the image it deploys.

The umbrella is built in a temporary directory the way `helm dependency build` leaves
one: Chart.yaml declaring amperity-operator with a condition, and this chart packaged
into its charts/ directory. It is rendered with the same engine as the other tests.
"""
import shutil

import helm_python
import pytest
import yaml

from objects import RELEASE_NS, container, env, kinds
from render import CHART, render

DIGEST = "sha256:" + "0123456789abcdef" * 4
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
REPOSITORY = "ghcr.io/amperity-operator/amperity-operator"


def parse(rendered):
    docs = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(rendered[path]) if d]
    return docs


@pytest.fixture
def umbrella(tmp_path):
    """An umbrella chart directory holding this chart, packaged, as a dependency."""
    root = tmp_path / "platform"
    (root / "charts").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2",
        "name": "platform",
        "version": "1.0.0",
        "dependencies": [{
            "name": "amperity-operator",
            "version": VERSION,
            "repository": "oci://ghcr.io/amperity-operator/charts",
            "condition": "amperity-operator.enabled",
        }],
    }))
    (root / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "registry.corp.example", "environment": "staging"},
        "amperity-operator": {"enabled": True},
    }))
    # One object of the umbrella's own, which reads a global too.
    (root / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: platform-settings\n"
        "data:\n  environment: {{ .Values.global.environment | quote }}\n")
    archive = helm_python.package(str(CHART), destination=str(root / "charts"))
    assert archive.endswith(f"amperity-operator-{VERSION}.tgz"), archive
    return root


def render_umbrella(root, values=None):
    chart = helm_python.Chart.load(str(root))
    try:
        return parse(chart.render(values or {}, name="platform", namespace=RELEASE_NS, is_install=True))
    finally:
        chart.close()


def test_the_umbrella_sees_the_packaged_chart_as_its_dependency(umbrella):
    deps = helm_python.dependency_list(str(umbrella))
    assert [(d["name"], d["status"]) for d in deps] == [("amperity-operator", "ok")], deps
    chart = helm_python.Chart.load(str(umbrella))
    try:
        [sub] = chart.dependencies
        assert sub["name"] == "amperity-operator" and sub["version"] == VERSION
    finally:
        chart.close()


def test_as_a_dependency_it_renders_the_deployment_with_the_default_image(umbrella):
    docs = render_umbrella(umbrella)
    deploy, c = container(docs)
    assert c["image"] == f"{REPOSITORY}:{APP_VERSION}"
    assert deploy["metadata"]["namespace"] == RELEASE_NS
    # Named after the umbrella's release, like every subchart.
    assert deploy["metadata"]["name"] == "platform-amperity-operator"
    assert deploy["metadata"]["labels"]["app.kubernetes.io/instance"] == "platform"
    assert env(c)["RUST_LOG"] == "info" and env(c)["LOG_FORMAT"] == "json"
    # The rest of the release is there too: CRDs, RBAC, the umbrella's own object.
    assert {"CustomResourceDefinition", "ClusterRole", "ServiceAccount", "ConfigMap"} <= {d["kind"] for d in docs}
    [own] = [d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"] == "platform-settings"]
    assert own["data"] == {"environment": "staging"}


def test_as_a_dependency_the_umbrella_sets_its_values(umbrella):
    docs = render_umbrella(umbrella, {
        "global": {"team": "data-platform"},
        "amperity-operator": {"image": {"repository": "registry.corp.example/amperity-operator", "digest": DIGEST},
                              "logLevel": "debug", "logFormat": "text", "replicas": 3},
    })
    deploy, c = container(docs)
    assert c["image"] == f"registry.corp.example/amperity-operator@{DIGEST}"
    assert deploy["spec"]["replicas"] == 3
    assert env(c)["RUST_LOG"] == "debug" and env(c)["LOG_FORMAT"] == "text"


def test_as_a_dependency_it_can_be_switched_off(umbrella):
    docs = render_umbrella(umbrella, {"amperity-operator": {"enabled": False}})
    assert not kinds(docs, "Deployment") and not kinds(docs, "CustomResourceDefinition")
    assert [d["metadata"]["name"] for d in docs] == ["platform-settings"]


def test_as_a_dependency_its_schema_still_rejects_unknown_values(umbrella):
    for values in ({"amperity-operator": {"unknownValue": 1}},
                   {"amperity-operator": {"image": {"digest": "latest"}}},
                   {"amperity-operator": {"enabled": "yes"}}):
        with pytest.raises(helm_python.HelmError):
            render_umbrella(umbrella, values)


def test_global_and_enabled_are_accepted_standalone_too():
    _, c = container(render({"global": {"imageRegistry": "registry.corp.example"}, "enabled": True}))
    assert c["image"] == f"{REPOSITORY}:{APP_VERSION}"


@pytest.mark.parametrize("image, expected", [
    ({}, f"{REPOSITORY}:{APP_VERSION}"),
    ({"tag": "0.2.0-rc.1"}, f"{REPOSITORY}:0.2.0-rc.1"),
    ({"repository": "registry.corp.example/amperity-operator", "tag": "dev"},
     "registry.corp.example/amperity-operator:dev"),
    ({"digest": DIGEST}, f"{REPOSITORY}@{DIGEST}"),
    # The digest pins the image: the tag is not used with it.
    ({"tag": "0.2.0", "digest": DIGEST}, f"{REPOSITORY}@{DIGEST}"),
    ({"repository": "localhost:5000/amperity-operator", "tag": "dev"}, "localhost:5000/amperity-operator:dev"),
])
def test_image_from_repository_tag_and_digest(image, expected):
    deploy, c = container(render({"image": image}))
    assert c["image"] == expected
    # The version label stays the chart's appVersion whatever image runs.
    assert deploy["metadata"]["labels"]["app.kubernetes.io/version"] == APP_VERSION


@pytest.mark.parametrize("image", [
    {"digest": "latest"},
    {"digest": "sha256:abc"},
    {"digest": "sha256:" + "A" * 64},
    {"digest": "md5:" + "0" * 32},
    {"digest": DIGEST + "\n"},
    {"tag": "has space"},
    {"tag": "0.2.0@" + DIGEST},
    {"repository": ""},
])
def test_bad_image_values_are_rejected(image):
    with pytest.raises(helm_python.HelmError):
        render({"image": image})


def test_image_pull_secrets_reach_the_pod():
    deploy, _ = container(render({"imagePullSecrets": [{"name": "regcred"}]}))
    assert deploy["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_packaged_chart_carries_its_readme_and_schema(tmp_path):
    archive = helm_python.package(str(CHART), destination=str(tmp_path))
    helm_python.expand(str(tmp_path / "x"), archive)
    unpacked = tmp_path / "x" / "amperity-operator"
    for name in ("README.md", "values.schema.json", "values.yaml", "Chart.yaml"):
        assert (unpacked / name).is_file(), name
    # Nothing of the repository beyond the chart.
    assert not (unpacked / "tests").exists()
    shutil.rmtree(tmp_path / "x")


def test_chart_metadata_points_at_the_project():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = "https://github.com/amperity-operator/amperity-operator"
    assert meta["home"] == project and meta["sources"] == [project]
    raw = "https://raw.githubusercontent.com/amperity-operator/amperity-operator/main/"
    assert meta["icon"].startswith(raw), meta["icon"]
    # The icon is a file of this repository, so the URL resolves once it is on main.
    icon = CHART.parents[1] / meta["icon"][len(raw):]
    assert icon.is_file() and icon.read_text().lstrip().startswith("<svg"), icon
    # The version the release workflow checks the tag against.
    assert meta["version"] == meta["appVersion"]
