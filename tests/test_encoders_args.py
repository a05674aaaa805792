"""encoders/args.py: 'NAME:k=v,...', the one parser of encoder arguments and its inverse."""

from __future__ import annotations

import pytest

from mmcache.encoders.args import format_encoder_arg, parse_encoder_arg
from mmcache.errors import EncoderError


def test_values_are_yaml_scalars():
    assert parse_encoder_arg("resnet18:fps=2,dtype=bfloat16,window=0.5,tta=true") == (
        "resnet18",
        {"fps": 2, "dtype": "bfloat16", "window": 0.5, "tta": True},
    )
    name, opts = parse_encoder_arg(" logmel : fps = 4 , , hop=0.01 ,")  # spaces and empty items are dropped
    assert (name, opts) == ("logmel", {"fps": 4, "hop": 0.01})
    assert [type(v) for v in opts.values()] == [int, float]
    assert parse_encoder_arg("clip") == ("clip", {})
    assert parse_encoder_arg("clip:") == ("clip", {})
    # what YAML would make into something other than a scalar stays the text as given
    assert parse_encoder_arg("x:a=[1,b=null,c={d}")[1] == {"a": "[1", "b": "null", "c": "{d}"}


@pytest.mark.parametrize("bad", ["x:fps", "x:=2", "x:fps=2,window", "x: =1"])
def test_an_item_that_is_not_key_value_is_an_error(bad):
    with pytest.raises(EncoderError, match="is not key=value"):
        parse_encoder_arg(bad)


@pytest.mark.parametrize(
    "text",
    ["resnet18", "resnet18:fps=2", "logmel:fps=2,window=0.5", "clip:tta=true,dtype=bfloat16", "m:lr=1e-05"],
)
def test_format_of_parse_gives_the_text_back(text):
    assert format_encoder_arg(*parse_encoder_arg(text)) == text


@pytest.mark.parametrize(
    "opts",
    [{}, {"fps": 2}, {"tta": True, "fps": 0.25}, {"tta": False}, {"dtype": "bfloat16", "num_frames": 8}, {"x": -3}],
)
def test_parse_of_format_gives_the_options_back_in_order(opts):
    text = format_encoder_arg("enc", opts)
    name, back = parse_encoder_arg(text)
    assert name == "enc" and back == opts and list(back) == list(opts)
    assert [type(v) for v in back.values()] == [type(v) for v in opts.values()]
    assert "True" not in text and "False" not in text  # booleans are written as YAML writes them
