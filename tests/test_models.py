"""Model references, offline provisioning errors, and the CLI's one-line messages."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import uuid

import pytest

from thinksearch import models
from thinksearch.cli import main
from thinksearch.errors import ThinksearchError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thinksearch", *args], capture_output=True, text=True, timeout=120)


def fake_parts(tmp_path, monkeypatch, chunks: list[bytes], sha: str | None = None, present: int | None = None):
    """Register a fake offline model split over packages that live in tmp_path."""
    pkgs = tmp_path / "site"
    n = len(chunks) if present is None else present
    stem = f"ts_fake_{uuid.uuid4().hex[:8]}_part"  # fresh names: imported modules are cached
    for i, data in enumerate(chunks[:n], 1):
        d = pkgs / f"{stem}{i}"
        (d / "data").mkdir(parents=True)
        (d / "data" / "part.bin").write_bytes(data)
        (d / "__init__.py").write_text(textwrap.dedent("""
            import os
            def get_part_path():
                return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "part.bin")
        """))
    monkeypatch.syspath_prepend(str(pkgs))
    whole = b"".join(chunks)
    m = models.OfflineModel(
        alias="fake-model", description="fake", modules=tuple(f"{stem}{i}" for i in range(1, len(chunks) + 1)),
        pip_names=tuple(f"ts-fake-part{i}" for i in range(1, len(chunks) + 1)), extra="fake-extra",
        sha256=sha or hashlib.sha256(whole).hexdigest(), size=len(whole),
    )
    monkeypatch.setitem(models.OFFLINE_MODELS, m.alias, m)
    return m


def test_assemble_checks_sha256_and_leaves_nothing_on_mismatch(tmp_path, monkeypatch, ts_home):
    m = fake_parts(tmp_path, monkeypatch, [b"abc", b"def"], sha="0" * 64)
    with pytest.raises(ThinksearchError, match="does not match"):
        models.prepare(m.alias)
    leftovers = [p.name for p in (ts_home / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    assert not models.is_prepared(m.alias)


def test_assemble_concatenates_in_order(tmp_path, monkeypatch):
    m = fake_parts(tmp_path, monkeypatch, [b"abc", b"def", b"g"])
    out = models.assemble_gguf(m, tmp_path / "x.gguf")
    assert out.read_bytes() == b"abcdefg"


def test_missing_part_package_names_the_extra(tmp_path, monkeypatch, ts_home):
    m = fake_parts(tmp_path, monkeypatch, [b"a", b"b", b"c"], present=2)
    with pytest.raises(ThinksearchError, match=r"ts-fake-part3 is not installed.*thinksearch\[fake-extra\]"):
        models.prepare(m.alias)


def test_prepare_swaps_in_only_a_finished_conversion(tmp_path, monkeypatch, ts_home):
    m = fake_parts(tmp_path, monkeypatch, [b"abc", b"def"])

    def crash(gguf, dest):
        (dest / "config.json").write_text("{}")
        raise RuntimeError("killed midway")

    monkeypatch.setattr(models, "convert_gguf", crash)
    with pytest.raises(RuntimeError):
        models.prepare(m.alias)
    root = ts_home / "models"
    assert not models.is_prepared(m.alias) and not models.model_dir(m.alias).exists()
    assert [p.name for p in root.iterdir() if p.is_dir()] == []  # no half-converted directory left

    monkeypatch.setattr(models, "convert_gguf", lambda gguf, dest: (dest / "config.json").write_text("{}"))
    target = models.prepare(m.alias)
    assert models.is_prepared(m.alias) and (target / "config.json").is_file()
    assert [p for p in root.iterdir() if p.is_dir()] == [target]


def test_prepare_of_a_prepared_alias_is_instant(monkeypatch, ts_home, tiny_model_dir):
    import shutil

    target = models.model_dir("qwen2.5-coder-0.5b-instruct")
    shutil.copytree(tiny_model_dir, target)
    (target / ".complete").write_text("{}")
    monkeypatch.setattr(models, "convert_gguf", lambda *a: pytest.fail("converted again"))
    assert models.prepare("qwen2.5-coder-0.5b-instruct") == target
    r = models.resolve("qwen2.5-coder-0.5b-instruct")
    assert (r.kind, r.path) == ("alias", str(target))


def test_reference_errors(tmp_path, ts_home):
    with pytest.raises(ThinksearchError, match="unknown model alias 'qwen-9b' \\(known: qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct\\)"):
        models.resolve("qwen-9b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ThinksearchError, match="is not a model directory"):
        models.resolve(str(tmp_path / "empty"))
    with pytest.raises(ThinksearchError, match="does not exist"):
        models.resolve(str(tmp_path / "missing" / "model"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ThinksearchError, match="is not a model"):
        models.resolve(str(tmp_path / "notes.txt"))
    with pytest.raises(ThinksearchError, match="not prepared; run: thinksearch models prepare"):
        models.resolve("qwen2.5-coder-0.5b-instruct", prepare_alias=False)
    with pytest.raises(ThinksearchError, match="not a LoRA adapter directory"):
        models.resolve(f"Qwen/Qwen2.5-0.5B-Instruct+{tmp_path / 'empty'}")


def test_hub_id_while_offline_names_the_alias(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = models.resolve("Qwen/Qwen2.5-0.5B-Instruct")
    assert r.kind == "hub"
    with pytest.raises(ThinksearchError) as e:
        models.load("Qwen/Qwen2.5-0.5B-Instruct")
    assert "HF_HUB_OFFLINE" in str(e.value) and models.DEFAULT_ALIAS in str(e.value)


def test_local_dir_and_adapter_refs(tiny_model_dir, tmp_path):
    r = models.resolve(str(tiny_model_dir))
    assert (r.kind, r.adapter) == ("dir", None)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "%s"}' % tiny_model_dir)
    r = models.resolve(f"{tiny_model_dir}+{adapter}")
    assert (r.path, r.adapter) == (str(tiny_model_dir), str(adapter))
    r = models.resolve(str(adapter))  # an adapter alone loads on its recorded base
    assert (r.path, r.adapter) == (str(tiny_model_dir), str(adapter))


def test_cli_errors_are_one_line(capsys, ts_home):
    assert main(["models", "prepare", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model alias 'nope' (known: ") and err.count("\n") == 1


def test_cli_models_list_json(capsys, ts_home):
    import json

    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["alias"] for r in rows} == set(models.OFFLINE_MODELS)
    assert not any(r["prepared"] for r in rows)


def test_help_does_not_import_torch():
    code = "import sys, thinksearch.cli as c; c.build_parser().format_help(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False False", out.stderr
    assert run_cli("--help").returncode == 0


def test_every_subcommand_help_formats():
    """A field docstring with a percent sign ("84-93% of") once crashed ``synth --help``: argparse
    expands % in help strings."""
    import argparse

    from thinksearch import cli

    def parsers(p: argparse.ArgumentParser):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    names = []
    for p in parsers(cli.build_parser()):
        assert p.format_help()
        names.append(p.prog)
    assert "thinksearch synth" in names and "thinksearch index build" in names
