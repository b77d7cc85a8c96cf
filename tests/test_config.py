"""params.yaml -> typed, frozen config; every kind of bad value fails naming file and key."""

from __future__ import annotations

import copy
import subprocess
import sys

import pydantic
import pytest
import yaml

from lumos.config import ConfigError, load_params, parse_params

from conftest import ROOT


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_default_profile_is_tiny(params):
    assert params.profile == "tiny"
    assert params.active.model.variant == "tiny"
    assert params.active.vision_encoder.pretrained is None  # tiny random config, offline


def test_paper_profile_holds_the_papers_values(params):
    p = params.profiles["paper"]
    assert p.model.variant == "XL/2"
    assert (p.vision_encoder.name, p.vision_encoder.pretrained) == ("dino", "facebook/dino-vitb16")
    assert p.vision_encoder.tokens == "cls"
    assert (p.text_encoder.pretrained, p.text_encoder.max_length) == ("google/flan-t5-xxl", 120)
    for rules in (p.curation.select, p.curation.keep):
        assert (rules.min_side, rules.aesthetic_min) == (512, 5.0)
    assert p.t2i_data.aesthetic_min == 5.5
    assert [s.name for s in p.curation.sources] == ["laion", "coyo", "sam", "journeydb", "imagenet"]
    assert sum(s.quota for s in p.curation.sources) == 190_000_000
    opt = p.train.optimizer
    assert (opt.lr, opt.weight_decay, opt.warmup_steps) == (1.6e-4, 0.03, 1000)
    assert (p.train.global_batch, p.train.precision) == (16384, "fp16")
    table_s1 = [(s.resolution, s.multi_aspect, s.steps, s.global_batch, s.lr, s.warmup_steps)
                for s in p.t2i.stages]
    assert table_s1 == [
        (256, False, 65000, 256 * 64, 1.6e-4, 1000),
        (512, False, 60000, 64 * 64, 8e-5, 1000),
        (1024, False, 20000, 16 * 64, 4e-5, 1000),
        (1024, True, 20000, 16 * 64, 4e-5, 1000),
    ]
    assert (p.nvs.views, p.nvs.eval_azimuths, p.nvs.eval_elevations_deg) == (32, 16, [0.0, 30.0])
    assert (p.i2v.frames, p.i2v.frame_interval, p.i2v.train.optimizer.lr, p.i2v.train.precision) == (16, 3, 2e-5, "bf16")
    assert (p.nvs.train.global_batch, p.i2v.train.global_batch, p.i2v.train.zero_stage) == (16384, 4096, 2)


def test_profile_is_chosen_by_one_key(raw):
    raw["profile"] = "paper"
    assert parse_params(raw).active.model.variant == "XL/2"


def test_config_is_frozen(params):
    with pytest.raises(pydantic.ValidationError):
        params.active.curation.keep.aesthetic_min = 1.0


def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()
T = "profiles.tiny."
BAD = [
    # (key path, bad value, where it is reported, words of the message);
    # a rule across fields is reported on its section
    (T + "curation.keep.aesthetc_min", 5.0, None, "unknown key"),
    (T + "curation.keep.aesthetic_min", "high", None, "valid number"),
    (T + "train.optimizer.lr", -1.0, None, "greater than 0"),
    (T + "model.condition_dropout", 1.5, None, "less than or equal to 1"),
    (T + "train.zero_stage", 5, None, "less than or equal to 3"),
    (T + "vision_encoder.tokens", "clss", None, "'cls', 'patch', 'all', 'topk' or 'random'"),
    (T + "model.variant", "XXL/2", None, "'tiny', 'B/2', 'L/2' or 'XL/2'"),
    (T + "train.gradient_checkpointing", "yes", None, "valid boolean"),
    (T + "mini_world.n_images", "400", None, "valid integer"),
    (T + "mini_world.base_url", "ftp://example", None, "should match pattern"),
    (T + "mini_world.max_side", 100, T + "mini_world", "max_side (100) must be >= min_side"),
    (T + "train.micro_batch", 3, T + "train", "multiple of micro_batch"),
    (T + "t2i.stages.1.resolution", 16, T + "t2i", "must not decrease"),
    ("profiles.paper.curation.sources.0.reader", "flickr", None, "'laion'"),
    ("profiles.paper.vae", _DELETE, None, "Field required"),
    ("profile", "huge", "(top level)", "'huge' is not one of ['paper', 'tiny']"),
]


@pytest.mark.parametrize("key,value,where,words", BAD, ids=[b[0].removeprefix(T) for b in BAD])
def test_bad_values_fail_naming_file_and_key(raw, tmp_path, key, value, where, words):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_set(raw, key, value)))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    msg = str(err.value)
    assert f"{path}: {where or key}: " in msg
    assert words in msg


def test_a_key_given_twice_is_an_error(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("profile: tiny", "profile: tiny\nprofile: paper", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="duplicate key 'profile'"):
        load_params(path)


def test_bad_yaml_and_missing_file_are_config_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("profile: [tiny\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_cli_rejects_misspelt_key_before_any_work(raw, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_set(raw, "profiles.tiny.mini_world.seeed", 1)))
    out = tmp_path / "world"
    proc = subprocess.run(
        [sys.executable, "-m", "lumos.cli", "mini-world", "--params", str(path), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "profiles.tiny.mini_world.seeed: unknown key" in proc.stderr
    assert not out.exists()


def test_resize_mode_no_survives_dvc_rewriting_params():
    """`dvc exp run -S` re-dumps params.yaml with `no` unquoted: YAML 1.1 reads it as false."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text().replace('resize_mode: "no"', "resize_mode: no"))
    assert raw["profiles"]["tiny"]["curation"]["download"]["resize_mode"] is False
    assert parse_params(raw, "params.yaml").active.curation.download.resize_mode == "no"
