"""The job contract: the output spec's defaults, validation and wire form."""

from __future__ import annotations

import json

import pytest

from service.queue.base import Job, OutputSpec


def test_the_defaults_are_a_png_of_the_dehazed_image_alone() -> None:
    spec = Job(payload=b"x").output
    assert spec == OutputSpec("png", 90, want_image=True, want_depth=False, depth_colormap=False)
    assert OutputSpec.from_wire("{}") == spec


def test_the_wire_form_round_trips_with_the_field_names_as_keys() -> None:
    spec = OutputSpec(format="webp", quality=55, want_image=False, want_depth=True, depth_colormap=True)
    assert OutputSpec.from_wire(spec.to_wire()) == spec
    assert OutputSpec.from_wire(spec.to_wire().encode()) == spec
    assert json.loads(spec.to_wire()) == {
        "format": "webp", "quality": 55, "want_image": False, "want_depth": True, "depth_colormap": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "jpg"}, "unknown output format 'jpg'"),
        ({"quality": 0}, "quality must be an integer in 1..100"),
        ({"quality": 90.0}, "quality must be an integer in 1..100"),
        ({"quality": True}, "quality must be an integer in 1..100"),
        ({"want_depth": 1}, "want_depth must be true or false"),
    ],
)
def test_invalid_values_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutputSpec(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        OutputSpec.from_wire(json.dumps(fields))


@pytest.mark.parametrize("text", ["[]", '"png"', '{"format": "png", "sepia": true}', "{not json"])
def test_unreadable_wire_forms_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        OutputSpec.from_wire(text)


def test_the_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        OutputSpec().format = "webp"  # type: ignore[misc]
