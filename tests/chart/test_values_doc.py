"""The chart's README lists every value of values.yaml with its default and meaning
(tests/chart/values_doc.py makes the table from values.yaml's `# --` comments)."""
import yaml

import values_doc
from render import CHART


def test_the_readme_table_is_the_one_values_yaml_gives():
    readme = values_doc.readme_table(values_doc.README.read_text())
    assert readme is not None, f"{values_doc.README}: the values table's markers are missing"
    expected = values_doc.table()
    if readme != expected:
        stale = sorted(set(readme.splitlines()) ^ set(expected.splitlines()))
        raise AssertionError(
            "charts/amperity-operator/README.md's values table differs from values.yaml; regenerate it "
            f"from the repository's root with: {values_doc.REGENERATE}\nrows that differ:\n" + "\n".join(stale))


def test_every_value_has_a_row_or_sits_inside_one():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = {line.split("|")[1].strip().strip("`") for line in values_doc.table().splitlines()[2:]}
    for path in values_doc.leaf_paths(values):
        parts = path.split(".")
        assert any(".".join(parts[:i]) in rows for i in range(1, len(parts) + 1)), path
    # The keys people set most are rows of their own, with their defaults.
    table = values_doc.table()
    for row in ('| `image.digest` | `""` |', '| `logFormat` | `"json"` |', '| `logLevel` | `"info"` |',
                '| `replicas` | `2` |', '| `amperity.allowedEndpoints` | `["https://*.amperity.com"]` |'):
        assert row in table, row


def test_the_generator_refuses_an_undocumented_key():
    text = (CHART / "values.yaml").read_text() + "\nundocumented: 1\n"
    try:
        values_doc.table(text)
    except SystemExit as e:
        assert "undocumented" in str(e)
    else:
        raise AssertionError("a key without a `# --` comment was accepted")


def test_the_generator_reads_nesting_and_multi_line_comments():
    text = ("# -- A section.\nsection:\n  # -- First line\n  # and second line.\n  leaf: 3\n"
            "  # -- Free-form.\n  object:\n    inner: {a: 1}\n# -- Top.\ntop: [1, 2]\n")
    assert values_doc.table(text).splitlines()[2:] == [
        "| `section` |  | A section. |",
        "| `section.leaf` | `3` | First line and second line. |",
        '| `section.object` | `{"inner": {"a": 1}}` | Free-form. |',
        "| `top` | `[1, 2]` | Top. |",
    ]
