"""The series the operator exports (tests/chart/exposition.txt, kept equal to what the
code encodes by tests/shipped/metrics_exposition.rs), and checks that a PromQL expression or a
promtool input series names only those: metric names, label names and label values."""
import pathlib
import re

FIXTURE = pathlib.Path(__file__).resolve().parent / "exposition.txt"

# Labels Prometheus adds to every scraped series (the ServiceMonitor's target labels).
# The operator exports none of them (test_monitoring checks), so they need no
# honorLabels and mean the same under any scrape configuration.
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
SELECTOR = re.compile(r"\b(amperity_operator_[a-zA-Z0-9_]+)\b(?:\{([^}]*)\})?")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def series():
    """Each sample name with its labels and the values each label takes."""
    found = {}
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"{FIXTURE.name}: cannot read {line!r}"
        labels = found.setdefault(m.group(1), {})
        for name, _, value in LABEL.findall(m.group(2) or ""):
            labels.setdefault(name, set()).add(value)
    assert found, f"{FIXTURE} holds no sample"
    return found


def _alternatives_match(pattern, values):
    """Each `|`-separated alternative of an anchored regex matches some exported value."""
    return [alt for alt in pattern.split("|") if not any(re.fullmatch(alt, v) for v in values)]


def problems(expr, exported=None):
    """What in a PromQL expression names something the operator does not export."""
    exported = exported if exported is not None else series()
    found, used_labels = [], set(TARGET_LABELS) | {"le"}
    selectors = SELECTOR.findall(expr)
    if not selectors:
        found.append(f"{expr!r} names no amperity_operator_ series")
    for name, matchers in selectors:
        if name not in exported:
            found.append(f"{name} is not exported (exported: {sorted(exported)})")
            continue
        labels = exported[name]
        used_labels |= set(labels)
        for label, op, value in LABEL.findall(matchers):
            if (label in TARGET_LABELS and label not in labels) or "$" in value:
                continue  # set by Prometheus, or a dashboard variable
            if label not in labels:
                found.append(f"{name} has no label {label} (it has {sorted(labels)})")
            elif op == "=" and value not in labels[label]:
                found.append(f'{name}{{{label}="{value}"}}: the operator never exports that value '
                             f"({sorted(labels[label])})")
            elif op == "=~" and (missing := _alternatives_match(value, labels[label])):
                found.append(f"{name}{{{label}=~{value!r}}}: {missing} match no exported value "
                             f"({sorted(labels[label])})")
    for _, names in GROUPING.findall(expr):
        for label in filter(None, (n.strip() for n in names.split(","))):
            if label not in used_labels:
                found.append(f"grouping by {label}, which no series of the expression carries")
    return found


def series_problems(selector, exported=None):
    """What in a promtool input series is not a series the operator exports: its name,
    its exact label names (besides target labels) and their values."""
    exported = exported if exported is not None else series()
    m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?", selector.strip())
    if not m:
        return [f"cannot read the series {selector!r}"]
    name = m.group(1)
    if name not in exported:
        return [f"{name} is not exported"]
    labels = {k: v for k, _, v in LABEL.findall(m.group(2) or "")}
    own = {k: v for k, v in labels.items() if k not in TARGET_LABELS or k in exported[name]}
    found = []
    if set(own) != set(exported[name]):
        found.append(f"{selector}: labels {sorted(own)}, but the operator exports {name} with {sorted(exported[name])}")
    for k, v in own.items():
        if k in exported[name] and v not in exported[name][k]:
            found.append(f'{selector}: {k}="{v}" is never exported ({sorted(exported[name][k])})')
    return found
