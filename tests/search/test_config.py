from __future__ import annotations

import pytest

from search.config import FLAT_KEYS, TrialConfig, format_value, parse_assignments, parse_value
from search.errors import ConfigError


def _rich_config() -> TrialConfig:
    return TrialConfig.from_flat(
        {
            "model.name": "se_resnet18",
            "model.se_reduction": 8,
            "model.dropout": 0.3,
            "model.width": 0.5,
            "optim.lr": 0.0123456789,
            "optim.weight_decay": 1e-5,
            "schedule.name": "multistep",
            "schedule.milestones": [0.3, 0.6, 0.9],
            "aug.preset": "full",
            "aug.erasing": 0.0,
            "aug.flip": False,
            "runtime.seed": 7,
            "data.dataset": "cifar100",
            "optim.nesterov": False,
        }
    )


def test_flat_round_trip_is_exact():
    cfg = _rich_config()
    assert TrialConfig.from_flat(cfg.to_flat()) == cfg
    # as text, the way MLflow stores params
    as_text = {k: format_value(v) for k, v in cfg.to_flat().items()}
    assert TrialConfig.from_flat(as_text) == cfg


def test_toml_round_trip_is_exact():
    cfg = _rich_config()
    again = TrialConfig.from_toml_text(cfg.to_toml())
    assert again == cfg and again.to_toml() == cfg.to_toml()
    assert again.schedule.milestones == (0.3, 0.6, 0.9)


def test_none_knobs_are_left_out_and_mean_default():
    flat = TrialConfig().to_flat()
    assert "model.attention" not in flat and flat["model.name"] == "resnet18"
    assert set(flat) < set(FLAT_KEYS)


def test_frozen():
    with pytest.raises(AttributeError):
        TrialConfig().optim.lr = 1.0  # type: ignore[misc]


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'") as err:
        TrialConfig().with_overrides({"optim.lrr": 0.1})
    assert err.value.key == "optim.lrr"


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("optim.lr", "fast", "expected a number"),
        ("optim.lr", -1.0, "out of range"),
        ("optim.epochs", 2.5, "expected an integer"),
        ("optim.epochs", True, "expected an integer"),
        ("optim.name", "lion", "expected one of sgd, adamw, adam"),
        ("model.attention", "cbam", "expected one of se, eca, none"),
        ("aug.flip", "maybe", "true or false"),
        ("schedule.milestones", [0.8, 0.2], "increasing fractions"),
        ("runtime.device", "tpu", "expected auto"),
        ("data.val_fraction", 1.0, "out of range"),
    ],
)
def test_bad_values_name_key_and_value(key, value, fragment):
    with pytest.raises(ConfigError) as err:
        TrialConfig().with_overrides({key: value})
    text = str(err.value)
    assert fragment in text and key in text and "\n" not in text


def test_unknown_model_lists_known_models():
    with pytest.raises(ConfigError) as err:
        TrialConfig().with_overrides({"model.name": "resnet19"})
    assert err.value.key == "model.name" and "resnet18" in str(err.value)
    assert "did you mean" in str(err.value)


def test_knob_the_model_does_not_take():
    with pytest.raises(ConfigError, match="does not take") as err:
        TrialConfig().with_overrides({"model.name": "base_cnn", "model.attention": "se"})
    assert err.value.key == "model.attention"


def test_parse_value_reads_toml_literals_and_bare_strings():
    assert parse_value("optim.lr", "0.05") == 0.05
    assert parse_value("optim.nesterov", "false") is False
    assert parse_value("model.name", "se_resnet18") == "se_resnet18"
    assert parse_value("schedule.milestones", "[0.5, 0.8]") == (0.5, 0.8)
    assert parse_value("schedule.milestones", "(0.5, 0.8)") == (0.5, 0.8)
    assert parse_value("model.dropout", "") is None


def test_parse_assignments():
    assert parse_assignments(["optim.lr=0.5", "model.name = resnet20"]) == {
        "optim.lr": 0.5,
        "model.name": "resnet20",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["optim.lr"])


def test_toml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlr = 'x'\n")
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_file(path)
    assert str(path) in str(err.value) and "optim.lr" in str(err.value)
    path.write_text("[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        TrialConfig.from_file(path)
    path.write_text("[optim\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        TrialConfig.from_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        TrialConfig.from_file(tmp_path / "missing.toml")


def test_diff():
    a = TrialConfig()
    b = a.with_overrides({"optim.lr": 0.2, "model.dropout": 0.5})
    assert a.diff(b) == {"model.dropout": (None, 0.5), "optim.lr": (0.1, 0.2)}
