"""Registry behaviour: names, families, knobs, and the errors users see for mistakes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from cifar_models import (
    ModelConfigError,
    create,
    list_models,
    model_family,
    model_knobs,
    register_model,
    registry,
)

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_FAMILIES = {
    "base_cnn": "cnn",
    "simple_cnn": "cnn",
    "improved_cnn": "cnn",
    **{f"resnet{d}": "resnet" for d in (18, 34, 50, 101, 152)},
    **{f"se_resnet{d}": "se_resnet" for d in (18, 34, 50, 101, 152)},
    **{f"resnet{d}": "cifar_resnet" for d in (20, 32, 56, 110)},
    "eca_resnet20": "cifar_resnet",
    "eca_resnet32": "cifar_resnet",
    "ghost_resnet20": "ghost_resnet",
    "ghost_resnet32": "ghost_resnet",
    **{f"densenet{d}": "densenet" for d in (121, 169, 201, 264)},
    "efficientnet_b2": "efficientnet",
}


def test_list_models_is_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(EXPECTED_FAMILIES)


@pytest.mark.parametrize("name", sorted(EXPECTED_FAMILIES))
def test_model_family(name: str) -> None:
    assert model_family(name) == EXPECTED_FAMILIES[name]


def test_model_knobs_come_from_builder_signatures() -> None:
    resnet_knobs = {
        "attention": "none",
        "se_reduction": 16,
        "eca_kernel": 3,
        "dropout": 0.0,
        "width": 1.0,
    }
    assert model_knobs("resnet18") == resnet_knobs
    assert model_knobs("resnet20") == resnet_knobs
    assert model_knobs("se_resnet50") == {**resnet_knobs, "attention": "se"}
    assert model_knobs("eca_resnet32") == {**resnet_knobs, "attention": "eca"}
    assert model_knobs("ghost_resnet20") == {**resnet_knobs, "ghost_ratio": 2}
    assert model_knobs("base_cnn") == {"dropout": 0.0, "width": 1.0}
    assert model_knobs("densenet121") == {"dropout": 0.0, "width": 1.0}
    assert model_knobs("efficientnet_b2") == {"dropout": 0.3, "pretrained": False}


def test_model_knobs_returns_a_copy() -> None:
    model_knobs("resnet18")["dropout"] = 0.9
    assert model_knobs("resnet18")["dropout"] == 0.0


def test_unknown_model_lists_sorted_names_and_suggests() -> None:
    with pytest.raises(ModelConfigError) as info:
        create("resnet19", 10)
    err = info.value
    message = str(err)
    assert (err.key, err.value) == ("name", "resnet19")
    assert "\n" not in message
    assert message.startswith("unknown model 'resnet19' (did you mean 'resnet18'?); known models: ")
    listed = message.split("known models: ", 1)[1].split(" (or timm:<name>)")[0].split(", ")
    assert listed == sorted(EXPECTED_FAMILIES)


def test_unknown_model_without_close_match_has_no_suggestion() -> None:
    expected = r"^unknown model 'transformer'; known models: base_cnn, "
    with pytest.raises(ModelConfigError, match=expected):
        create("transformer", 10)


@pytest.mark.parametrize("lookup", [model_family, model_knobs])
def test_inspection_of_unknown_model_is_a_config_error(lookup) -> None:
    with pytest.raises(ModelConfigError) as info:
        lookup("nope")
    assert info.value.key == "name"


def test_unknown_knob_names_the_accepted_knobs() -> None:
    with pytest.raises(ModelConfigError) as info:
        create("base_cnn", 10, attention="se")
    assert str(info.value) == (
        "model 'base_cnn' does not take knob 'attention' (it takes: dropout, width)"
    )
    assert (info.value.key, info.value.value) == ("attention", "se")


def test_misspelt_knob_gets_a_suggestion() -> None:
    expected = r"\(did you mean 'dropout'\? it takes: attention, dropout, eca_kernel, "
    with pytest.raises(ModelConfigError, match=expected):
        create("resnet18", 10, dropuot=0.1)


def test_out_of_range_message() -> None:
    with pytest.raises(ModelConfigError) as info:
        create("base_cnn", 10, dropout=1.5)
    assert str(info.value) == "knob 'dropout' = 1.5 is out of range [0, 1)"


@pytest.mark.parametrize(
    ("name", "knob", "value"),
    [
        ("resnet18", "attention", "cbam"),
        ("resnet18", "attention", None),
        ("resnet18", "se_reduction", 0),
        ("resnet18", "se_reduction", 2.5),
        ("resnet18", "se_reduction", True),
        ("resnet18", "eca_kernel", 4),
        ("resnet18", "eca_kernel", 0),
        ("ghost_resnet20", "ghost_ratio", 1),
        ("ghost_resnet20", "ghost_ratio", "2"),
        ("base_cnn", "dropout", 1.0),
        ("base_cnn", "dropout", -0.1),
        ("base_cnn", "dropout", "0.5"),
        ("base_cnn", "width", 0),
        ("base_cnn", "width", -1.0),
        ("base_cnn", "width", math.inf),
        ("efficientnet_b2", "pretrained", "yes"),
        ("efficientnet_b2", "pretrained", 1),
    ],
)
def test_bad_knob_values(name: str, knob: str, value: object) -> None:
    with pytest.raises(ModelConfigError) as info:
        create(name, 10, **{knob: value})
    assert info.value.key == knob
    assert info.value.value is value
    assert "\n" not in str(info.value)
    assert repr(knob) in str(info.value)


def test_valid_knob_values_are_accepted() -> None:
    # ints for float knobs are fine: a search space may hand over width=1.
    model = create("resnet20", 10, attention="se", se_reduction=4, eca_kernel=5, dropout=0, width=1)
    assert isinstance(model, nn.Module)


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.0, True, "10", None])
def test_bad_num_classes(num_classes: object) -> None:
    with pytest.raises(ModelConfigError) as info:
        create("base_cnn", num_classes)  # type: ignore[arg-type]
    assert info.value.key == "num_classes"


def test_model_config_error_is_a_value_error() -> None:
    assert issubclass(ModelConfigError, ValueError)


@pytest.fixture
def throwaway_name():
    """A registry name that is removed again whatever the test does."""
    name = "_throwaway_test_model"
    yield name
    registry._REGISTRY.pop(name, None)


def test_register_model_and_duplicate_registration(throwaway_name: str) -> None:
    def build(num_classes: int, *, dropout: float = 0.0) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(3 * 32 * 32, num_classes))

    build.__name__ = throwaway_name
    assert register_model("test")(build) is build
    assert throwaway_name in list_models()
    assert model_family(throwaway_name) == "test"
    assert model_knobs(throwaway_name) == {"dropout": 0.0}
    assert create(throwaway_name, 3)[-1].out_features == 3

    with pytest.raises(ValueError, match="already registered") as info:
        register_model("other")(build)
    assert not isinstance(info.value, ModelConfigError)
    assert model_family(throwaway_name) == "test"


def _positional_knob(num_classes: int, dropout: float = 0.0) -> nn.Module:
    raise AssertionError("never built")


def _unknown_knob(num_classes: int, *, colour: str = "red") -> nn.Module:
    raise AssertionError("never built")


def _bad_default(num_classes: int, *, dropout: float = 2.0) -> nn.Module:
    raise AssertionError("never built")


def _no_num_classes(*, dropout: float = 0.0) -> nn.Module:
    raise AssertionError("never built")


@pytest.mark.parametrize(
    "builder", [_positional_knob, _unknown_knob, _bad_default, _no_num_classes]
)
def test_register_model_rejects_builders_breaking_conventions(builder) -> None:
    with pytest.raises(ValueError, match=builder.__name__) as info:
        register_model("test")(builder)
    assert not isinstance(info.value, ModelConfigError)
    assert builder.__name__ not in list_models()


def test_timm_without_timm_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import timm` fail even where timm is installed.
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ModelConfigError) as info:
        create("timm:resnet18", 10)
    assert str(info.value) == (
        "timm:resnet18 needs the optional 'timm' extra: pip install -e '.[timm]'"
    )
    assert (info.value.key, info.value.value) == ("name", "timm:resnet18")


def test_timm_models_only_take_dropout() -> None:
    assert model_family("timm:resnet18") == "timm"
    assert model_knobs("timm:resnet18") == {"dropout": 0.0}
    with pytest.raises(ModelConfigError, match="does not take knob 'width'") as info:
        create("timm:resnet18", 10, width=0.5)
    assert info.value.key == "width"


def test_importing_does_not_pull_in_the_search_stack() -> None:
    # cifar_models must stay usable on its own (e.g. from a notebook); run in a fresh
    # interpreter because this test session may already have imported these modules.
    forbidden = ("optuna", "mlflow", "click", "search")
    code = (
        f"import sys, cifar_models; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == ""


@pytest.mark.parametrize(
    "typo, meant",
    [("resnet2O", "resnet20"), ("se_resnt18", "se_resnet18"), ("RESNET56", "resnet56")],
)
def test_a_misspelt_model_name_suggests_the_name_fewest_edits_away(typo, meant):
    with pytest.raises(ModelConfigError, match=f"did you mean '{meant}'"):
        create(typo, 10)


def test_no_suggestion_for_a_name_far_from_every_model():
    with pytest.raises(ModelConfigError) as info:
        create("transformer", 10)
    assert "did you mean" not in str(info.value)
