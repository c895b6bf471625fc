"""Renders the Helm chart offline with Helm's own engine (helm-python-sdk).

Used by the chart tests and by the end-to-end suite, which applies the rendered
RBAC to a real API server:
  python3 tests/chart/render.py [values.json] [--kinds=K,K] [--namespace=NS]
"""
import json
import pathlib
import sys

import helm_python
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "amperity-operator"


def render(values=None, namespace="amperity-system", name="amperity-operator"):
    """Every manifest the chart renders, parsed, in template order."""
    chart = helm_python.Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    finally:
        chart.close()
    manifests = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                doc.setdefault("_template", path)
                manifests.append(doc)
    return manifests


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    values = json.loads(pathlib.Path(args[0]).read_text()) if args else {}
    kinds, namespace = None, "amperity-system"
    for a in sys.argv[1:]:
        if a.startswith("--kinds="):
            kinds = set(a.split("=", 1)[1].split(","))
        if a.startswith("--namespace="):
            namespace = a.split("=", 1)[1]
    docs = [d for d in render(values, namespace=namespace) if kinds is None or d["kind"] in kinds]
    for d in docs:
        d.pop("_template", None)
    print(yaml.safe_dump_all(docs, sort_keys=False))
