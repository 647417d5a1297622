"""Options: the spec the client parses, validation messages, handlers."""

import pytest
from dask_gateway.options import Options as ClientOptions

from jupyterhub_dask_gateway.errors import InvalidOptions
from jupyterhub_dask_gateway.models import User
from jupyterhub_dask_gateway.options import Bool, Float, Integer, Mapping, Options, Select, String

ALICE = User("alice", frozenset({"team"}), False)


def make():
    return Options(
        Integer("cores", 1, min=1, max=4, label="Cores"),
        Float("memory", 1, min=0.5, max=8),
        String("image", "default"),
        Bool("gpu", False),
        Select("size", [("small", 1.5), ("large", 15)], label="Size"),
        Mapping("env", {"A": "1"}),
    )


def test_spec_round_trips_through_the_real_client():
    spec = make().spec()
    opts = ClientOptions._from_spec(spec)
    assert dict(opts) == {
        "cores": 1,
        "memory": 1.0,
        "image": "default",
        "gpu": False,
        "size": "small",
        "env": {"A": "1"},
    }
    assert spec[0] == {
        "field": "cores",
        "label": "Cores",
        "default": 1,
        "spec": {"type": "int", "min": 1, "max": 4},
    }
    assert spec[2]["spec"] == {"type": "string"}
    assert spec[4]["spec"] == {"type": "select", "options": ["small", "large"]}


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"cores": 10}, "cores must be <= 4, got 10"),
        ({"cores": 0}, "cores must be >= 1, got 0"),
        ({"cores": "2"}, "cores must be an integer"),
        ({"cores": True}, "cores must be an integer"),
        ({"memory": "x"}, "memory must be a number"),
        ({"memory": float("inf")}, "finite"),
        ({"image": 3}, "image must be a string"),
        ({"gpu": "yes"}, "gpu must be a bool"),
        ({"size": "huge"}, "size must be one of ['small', 'large']"),
        ({"env": []}, "env must be a mapping"),
        ({"bogus": 1}, "Unknown fields ['bogus']"),
    ],
)
def test_validation_messages(request_, message):
    with pytest.raises(InvalidOptions) as info:
        make().parse(request_)
    assert message in info.value.message


def test_targets_and_select_values():
    opts = make()
    values = opts.parse({"size": "large", "cores": 2})
    overrides = opts.overrides(values, ALICE)
    assert overrides["size"] == 15 and overrides["cores"] == 2


def test_handler_with_user_and_passthrough_field():
    def handler(options, user):
        return {"worker_cores": options.cores, "environment": {"OWNER": user.name}}

    opts = Options(Integer("cores", 1, min=1, max=4), handler=handler)
    opts = opts.with_field(String("shared_groups", ""))
    values = opts.parse({"cores": 3, "shared_groups": "team"})
    assert opts.overrides(values, ALICE) == {"worker_cores": 3, "environment": {"OWNER": "alice"}}


def test_handler_value_error_is_a_422():
    def handler(options):
        raise ValueError("cores and memory do not fit")

    opts = Options(Integer("cores", 1), handler=handler)
    with pytest.raises(InvalidOptions, match="do not fit"):
        opts.overrides(opts.parse({}), ALICE)


def test_bad_declarations_fail_early():
    with pytest.raises(InvalidOptions):
        Integer("cores", 10, min=1, max=4)
    with pytest.raises(ValueError):
        Options(Integer("a", 1), Integer("a", 2))
    with pytest.raises(ValueError):
        Select("size", [])


def test_number_bounds_must_be_numbers_the_client_can_use():
    # The client builds its widgets from the bounds: a float bound on an Integer breaks it.
    with pytest.raises(TypeError, match="min must be a number"):
        Integer("n", 2, min=1.0)
    with pytest.raises(TypeError, match="max must be a number"):
        Float("x", 1.0, max=True)
    assert Float("x", 1.0, min=0, max=2.5).spec()["spec"]["max"] == 2.5
