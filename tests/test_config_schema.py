"""Config values are checked up front (clipfuse.config_schema), and config YAML is read with
numbers as YAML 1.2 reads them, no key given twice and no alias bombs (issue 24)."""

from pathlib import Path

import pytest
from helpers import error_line

from clipfuse.cli import main
from clipfuse.config import DEFAULTS, MAX_VALUES, load_config, with_defaults
from clipfuse.config_schema import validate_config
from clipfuse.errors import ClipfuseError
from clipfuse.research.experiments.spec import load_spec

CAMVID = "configs/plain_mobilenetv2_camvid_192x256_140.yaml"
ENCODER = "expected auto or <kind>:<argument> with kind one of open_clip:..., hf:..., bank:..."

# The cases of issue 24: each is one error naming the key, the value and what is allowed.
BAD = {
    "train.max_steps=abc": "config key train.max_steps is 'abc': expected a positive integer",
    "train.max_steps=-5": "config key train.max_steps is -5: expected a positive integer",
    "train.max_steps=0": "config key train.max_steps is 0: expected a positive integer",
    "train.max_steps=1.5": "config key train.max_steps is 1.5: expected a positive integer",
    "train.max_steps=true": "config key train.max_steps is true: expected a positive integer",
    "data.crop_size=[0,0]": "config key data.crop_size is [0, 0]: expected [height, width], two",
    "data.crop_size=[64]": "config key data.crop_size is [64]: expected [height, width], two",
    "data.crop_size=abc": "config key data.crop_size is 'abc': expected [height, width], two",
    "train.lr=-0.001": "config key train.lr is -0.001: expected a positive number",
    "train.lr=.nan": "config key train.lr is .nan: expected a positive number",
    "train.lr=.inf": "config key train.lr is .inf: expected a positive number",
    "train.lr=inf": "config key train.lr is 'inf': expected a positive number",
    "train.lr='0.1'": "config key train.lr is '0.1': expected a positive number",
    "data.batch_size=0": "config key data.batch_size is 0: expected a positive integer",
    "train.val_every=0": "config key train.val_every is 0: expected a positive integer",
    "seed=abc": "config key seed is 'abc': expected an integer from 0 to 4294967295",
    "train.precision=bogus": "config key train.precision is 'bogus': expected one of auto, 32-true",
    "data.num_workers=-1": "config key data.num_workers is -1: expected an integer >= 0",
    "train.warmup_steps=-3": "config key train.warmup_steps is -3: expected an integer >= 0",
    "train.threads=0": "config key train.threads is 0: expected auto or a positive integer",
    "train.channels_last=maybe": "config key train.channels_last is 'maybe': expected true, false or",
    "text.shuffle=-1": "config key text.shuffle is -1: expected false, true or an integer >= 0",
    "text.encoder=random:": f"config key text.encoder is {{random: null}}: {ENCODER}",
    "text.encoder=null": f"config key text.encoder is null: {ENCODER}",
    "text.encoder=''": f"config key text.encoder is '': {ENCODER}",
    "text.encoder=5": f"config key text.encoder is 5: {ENCODER}",
    "text.encoder=random:0": "config key text.encoder is 'random:0': expected a positive dimension",
    "text.encoder=mystery:x": f"config key text.encoder is 'mystery:x': {ENCODER}",
    "model.method=fcn": "config key model.method is 'fcn': expected one of plain, denseclip, conv",
    "data.dataset=voc": "config key data.dataset is 'voc': expected one of camvid, ade20k, city",
    "model.decoder_kwargs.chanels=8": "config key model.decoder_kwargs.chanels is unknown: "
    "decoder fpn (SemanticFPN) takes channels, dropout",
    "model.head_kwargs.dim=8": "config key model.head_kwargs.dim is unknown: method plain has no "
    "language head, so model.head_kwargs must be empty",
    "model.backbone_kwargs.weights=x": "config key model.backbone_kwargs.weights is unknown: the "
    "backbone (TimmBackbone) takes pretrained, img_size, frozen_bn, mean, std",
    "data.dataset_kwargs={fold: 1}": "config key data.dataset_kwargs.fold is unknown: dataset "
    "camvid (CamVid) takes no options",
    "eval.mode=tiles": "config key eval.mode is 'tiles': expected whole or slide",
    "eval.mode=slide": "config key eval.mode is 'slide': expected eval.crop_size and eval.stride",
    "train.init_classes=[Tree=vegetation]": "config key train.init_classes is set: expected "
    "train.init_from too",
    "data.train_images=0": "config key data.train_images",
    "train.init_classes=[tree]": "config key train.init_classes is [tree]: expected null or",
    "text.negatives=lvis.npy": "config key text.negatives is set: expected model.text_classifier",
    "eval.crop_size=[8]": "config key eval.crop_size is [8]: expected null or [height, width]",
    "eval.stride=[0,4]": "config key eval.stride is [0, 4]: expected null or [height, width]",
    "eval.scales=[]": "config key eval.scales is []: expected a non-empty list of positive",
    "eval.scales=[1.0,-0.5]": "config key eval.scales is [1.0, -0.5]: expected a non-empty list",
    "eval.flip=maybe": "config key eval.flip is 'maybe': expected true or false",
    "data.scale_range=[2.0,0.5]": "config key data.scale_range is [2.0, 0.5]: expected [low, high]",
    "train.loss=focal": "config key train.loss is 'focal': expected ce or ohem",
    "train.ohem_thresh=0": "config key train.ohem_thresh is 0: expected a number in (0, 1]",
    "train.ohem_thresh=1.5": "config key train.ohem_thresh is 1.5: expected a number in (0, 1]",
    "train.ohem_min_kept=-1": "config key train.ohem_min_kept is -1: expected an integer >= 0",
    "train.class_weight=[1,-0.5]": "config key train.class_weight is [1, -0.5]: expected null, "
    "balanced, or a list of positive numbers (one per class)",
    "train.class_weight=[1,0]": "config key train.class_weight is [1, 0]: expected null, balanced",
    "train.class_weight=[]": "config key train.class_weight is []: expected null, balanced",
    "train.class_weight=inverse": "config key train.class_weight is 'inverse': expected null, bal",
}


@pytest.mark.parametrize("override", BAD, ids=list(BAD))
def test_a_bad_value_is_one_error_naming_key_value_and_what_is_allowed(override):
    with pytest.raises(ClipfuseError) as caught:
        load_config(None, [override])
    assert str(caught.value).startswith(BAD[override]), str(caught.value)


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=1",  # an integer is a number
        "text.shuffle=true",
        "text.shuffle=3",
        "text.encoder=random:32:7",
        "train.threads=3",
        "data.dataset=CamVid",  # dataset names are case-insensitive
        "model.decoder=upernet",
        "train.devices=[0, 1]",
        "data.val_size=240",
        "train.loss=ohem",
        "train.ohem_thresh=1",
        "train.ohem_min_kept=0",
        "train.class_weight=balanced",
        "train.class_weight=[1, 0.5, 2.5]",
    ],
)
def test_good_values_pass(override):
    load_config(None, [override])


def test_options_are_the_arguments_of_what_they_build():
    config = load_config(
        None,
        [
            "model.method=convformer",
            "model.decoder=upernet",
            "model.head_kwargs={dim: 32, bridge: dot, gate_init: null}",
            "model.decoder_kwargs={pool_scales: [1, 2]}",
        ],
    )
    assert config["model"]["decoder_kwargs"] == {"pool_scales": [1, 2]}
    with pytest.raises(ClipfuseError, match=r"head_kwargs.depth is unknown: .*\(ConvFormerHead\)"):
        load_config(None, ["model.method=convformer", "model.head_kwargs.depth=2"])
    with pytest.raises(ClipfuseError, match=r"decoder upernet \(UperNet\) takes channels, pool_sc"):
        load_config(None, ["model.decoder=upernet", "model.decoder_kwargs.scales=[1]"])


def test_several_bad_values_name_the_others_too():
    with pytest.raises(ClipfuseError) as caught:
        load_config(None, ["train.max_steps=0", "data.batch_size=0", "train.lr=-1"])
    message = str(caught.value)
    assert message.startswith("config key data.batch_size is 0: expected a positive integer")
    assert message.endswith("(also bad: train.max_steps, train.lr)")


def test_the_defaults_and_every_shipped_config_pass():
    validate_config(DEFAULTS)
    for path in Path("configs").glob("*.yaml"):
        load_config(path)


def test_saved_configs_are_validated_when_read_back():
    with pytest.raises(ClipfuseError, match="config key train.val_every is 0"):
        with_defaults({"train": {"val_every": 0}})


def test_scientific_notation_is_a_number_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n  momentum: .9e0\n")
    train = load_config(path, ["train.poly_power=1.0e0", "train.aux_temperature=7e-2"])["train"]
    assert (train["lr"], train["weight_decay"], train["momentum"]) == (0.001, 0.0005, 0.9)
    assert (train["poly_power"], train["aux_temperature"]) == (1.0, 0.07)
    assert load_config(None, ["train.max_steps=140"])["train"]["max_steps"] == 140  # still an int
    text = load_config(None, ["text.aliases={sky: 1e3x}"])["text"]
    assert text["aliases"] == {"sky": "1e3x"}  # not a number: a string as before


@pytest.mark.parametrize("content", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.yaml"
    path.write_text(content)
    with pytest.raises(ClipfuseError, match=f"config file {path} is empty"):
        load_config(path)


def test_a_key_given_twice_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 0.1\n  max_steps: 5\n  lr: 0.2\n")
    with pytest.raises(
        ClipfuseError, match=rf"config file {path}: key 'lr' is given twice \(lines 2 and 4\)"
    ):
        load_config(path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {path}\nruns: {{a: {{}}}}\nruns: {{b: {{}}}}\n")
    with pytest.raises(ClipfuseError, match=f"experiment spec {spec}: key 'runs' is given twice"):
        load_spec(spec)


def _alias_bomb(levels: int = 9) -> str:
    """Billion laughs in YAML's flow style: each level lists the one below nine times."""
    entries = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    for level in range(1, levels):
        entries.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "{" + ", ".join(entries) + "}"


def test_an_alias_bomb_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"text:\n  aliases: {_alias_bomb()}\n")
    expanded = f"holds more than {MAX_VALUES:,} values once its YAML aliases"
    with pytest.raises(ClipfuseError, match=f"config file {path} {expanded}"):
        load_config(path)
    with pytest.raises(ClipfuseError, match=f"override text.aliases=... {expanded}"):
        load_config(None, [f"text.aliases={_alias_bomb(6)}"])
    recursive = tmp_path / "loop.yaml"
    recursive.write_text("text:\n  aliases: &loop {sky: *loop}\n")
    with pytest.raises(ClipfuseError, match="holds more than"):
        load_config(recursive)
    shared = tmp_path / "anchors.yaml"  # a few aliases are fine
    shared.write_text("data:\n  crop_size: &size [64, 64]\neval:\n  crop_size: *size\n")
    assert load_config(shared)["eval"]["crop_size"] == [64, 64]


def test_bad_configs_fail_before_the_run_folder_is_touched(tmp_path, capsys):
    out = tmp_path / "run"
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"text:\n  aliases: {_alias_bomb()}\n")
    for argv in (
        ["--config", CAMVID, "train.max_steps=abc"],
        ["--config", CAMVID, "train.val_every=0"],
        ["--config", str(bomb)],
    ):
        capsys.readouterr()
        assert main(["train", "--out", str(out), *argv]) == 2
        assert error_line(capsys.readouterr().err).startswith("error: config ")
        assert not out.exists()
