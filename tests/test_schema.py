"""schema.py: the JSON Schemas shipped with the package, and their violations as 'where: what' lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcache.errors import InputError, MMCacheError
from mmcache.schema import load_schema, schema_errors, validate

SHIPPED = sorted(p.name.removesuffix(".schema.json") for p in (Path(__file__).parents[1] / "schemas").glob("*.json"))
SWEEP = {"base": {"cache": "c"}, "grid": {"lr": [0.1, 0.01]}, "seeds": [0, 1]}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_schema_in_the_repo_is_installed_and_a_draft_2020_12_schema(name):
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.schema.json")


def test_a_valid_document_has_no_errors():
    assert schema_errors(SWEEP, "sweep-config") == []
    validate(SWEEP, "sweep-config", "sweep.yaml")  # raises nothing


def test_errors_are_sorted_by_location_and_name_it():
    bad = {"grid": {"lr": []}, "seeds": [-1], "extra": 1}  # no base, an empty grid, a negative seed
    errs = schema_errors(bad, "sweep-config")
    assert [e.split(": ")[0] for e in errs] == ["<root>", "<root>", "grid/lr", "seeds/0"]
    assert any("'base' is a required property" in e for e in errs) and any("'extra'" in e for e in errs)
    assert errs == sorted(errs, key=lambda e: e.split(": ")[0].replace("<root>", ""))


def test_validate_raises_the_given_error_with_the_first_violation_and_a_count():
    with pytest.raises(InputError, match=r"^sweep\.yaml does not match schema sweep-config: <root>: .*\(and 3 more\)$"):
        validate({"grid": {"lr": []}, "seeds": [-1], "extra": 1}, "sweep-config", "sweep.yaml", InputError)
    with pytest.raises(MMCacheError, match=r"seeds/0: -1 is less than the minimum of 0$"):
        validate({"base": {}, "seeds": [-1]}, "sweep-config", "it")
