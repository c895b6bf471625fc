"""The CRDs are templates (crds.enabled), so `helm upgrade` carries schema changes, and
each is exactly what `amperity-operator crd` prints."""
import os
import pathlib
import subprocess

import pytest
import yaml

from objects import kinds
from render import CHART, render

REPO = CHART.parents[1]
CHART_CRDS = CHART / "files" / "crds"


def printed_crds():
    """Each CRD `amperity-operator crd` prints (YAML documents), by name: (text, object).
    scripts/chart-tests.sh builds the binary first."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "amperity-operator"
    assert binary.exists(), f"{binary} is missing: run scripts/chart-tests.sh (it builds it) or cargo build"
    out = subprocess.run([str(binary), "crd"], check=True, capture_output=True, text=True).stdout
    crds = {}
    for text in split_documents(out):
        crd = yaml.safe_load(text)
        assert crd["kind"] == "CustomResourceDefinition", crd["kind"]
        crds[crd["metadata"]["name"]] = (text, crd)
    assert crds, "amperity-operator crd printed no CRD"
    return crds


def split_documents(text):
    """The documents of a YAML stream, each with its text as written."""
    docs, current = [], []
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == "---":
            docs.append("".join(current))
            current = []
        else:
            current.append(line)
    docs.append("".join(current))
    return [d for d in docs if d.strip()]


def test_the_chart_holds_exactly_the_crds_the_binary_prints():
    printed = printed_crds()
    files = sorted(p.name for p in CHART_CRDS.iterdir())
    assert files == sorted(f"{name}.yaml" for name in printed), (
        "charts/amperity-operator/files/crds/ must hold one file per CRD that `amperity-operator crd` prints")
    for name, (text, _) in printed.items():
        assert (CHART_CRDS / f"{name}.yaml").read_text() == text, (
            f"files/crds/{name}.yaml differs from `amperity-operator crd`: copy that document into it")


@pytest.mark.parametrize("keep", [True, False])
def test_every_crd_is_rendered_from_its_file_with_the_release_labels(keep):
    printed = printed_crds()
    rendered = {d["metadata"]["name"]: d for d in kinds(render({"crds": {"keep": keep}}), "CustomResourceDefinition")}
    assert set(rendered) == set(printed)
    for name, (_, crd) in printed.items():
        got = rendered[name]
        # The schema, names, versions and printer columns are the generated ones, untouched.
        assert got["spec"] == crd["spec"], name
        assert got["apiVersion"] == crd["apiVersion"]
        labels = got["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/instance"]
        annotations = got["metadata"].get("annotations", {})
        if keep:
            # helm uninstall leaves the CRD, and so every run, in place.
            assert annotations == {"helm.sh/resource-policy": "keep"}
        else:
            assert "helm.sh/resource-policy" not in annotations


def test_crds_can_be_left_to_someone_else():
    assert not kinds(render({"crds": {"enabled": False}}), "CustomResourceDefinition")
