"""Flags from PAGEDLLM_* environment variables; the command line still wins."""
from __future__ import annotations

import argparse

import pytest

from pagedllm.cli.env_defaults import apply_env_defaults
from pagedllm.server.launch import add_serve_args


def _parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    apply_env_defaults(parser, environ)
    return parser


def test_env_sets_defaults_and_flags_win() -> None:
    env = {"PAGEDLLM_PORT": "9001", "PAGEDLLM_MAX_NUM_SEQS": "12", "PAGEDLLM_ENABLE_PREFIX_CACHING": "false",
           "PAGEDLLM_SERVED_MODEL_NAME": "a,b", "PAGEDLLM_API_KEY": "secret"}
    args = _parser(env).parse_args([])
    assert (args.port, args.max_num_seqs, args.enable_prefix_caching) == (9001, 12, False)
    assert args.served_model_name == ["a", "b"] and args.api_key == "secret"
    args = _parser(env).parse_args(["--port", "9002", "--enable-prefix-caching"])
    assert args.port == 9002 and args.enable_prefix_caching is True


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="PAGEDLLM_PORT"):
        _parser({"PAGEDLLM_PORT": "eighty"})


def test_chat_template_from_file_or_text(tmp_path) -> None:
    from pagedllm.server.launch import load_chat_template

    path = tmp_path / "t.jinja"
    path.write_text("{{ messages[0]['content'] }}")
    assert load_chat_template(str(path)) == "{{ messages[0]['content'] }}"
    assert load_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}").startswith("{%")
    with pytest.raises(ValueError, match="neither a file"):
        load_chat_template("/no/such/template.jinja")
