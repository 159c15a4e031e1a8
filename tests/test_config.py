from dataclasses import fields

from paramem.cli.main import app
from paramem.config import PairConfig, RecallConfig, RememberConfig, TrainConfig, option_default, option_help


def test_every_setting_carries_its_meaning():
    for config in (RememberConfig, TrainConfig, PairConfig, RecallConfig):
        for f in fields(config):
            assert f.name in ("train", "pairs") or f.metadata.get("help"), f"{config.__name__}.{f.name}"


def test_cli_options_take_their_default_and_help_from_the_config_fields():
    assert option_default(TrainConfig, "epochs") == TrainConfig().epochs == 10
    assert option_default(TrainConfig, "layers") is None
    import typer

    remember = typer.main.get_command(app).commands["remember"]
    options = {param.name: param for param in remember.params}
    for config, name, option in (
        (TrainConfig, "qa_weight", "qa_weight"),
        (TrainConfig, "replay_share", "replay"),
        (PairConfig, "negative_ratio", "negative_ratio"),
        (TrainConfig, "epochs", "epochs"),
        (RememberConfig, "keep_text", "keep_text"),
    ):
        assert options[option].help == option_help(config, name)
        assert options[option].default == option_default(config, name)


def test_the_config_tree_nests_and_checks_every_level():
    import pytest

    from paramem.errors import InputError

    config = RememberConfig(train=TrainConfig(pairs=PairConfig(max_pairs=20)))
    assert config.train.pairs.max_pairs == 20 and config.dtype is None
    with pytest.raises(InputError, match="unknown dtype"):
        RememberConfig(dtype="int4")
    with pytest.raises(InputError, match="branches must be at least 1"):
        RecallConfig(branches=0)
