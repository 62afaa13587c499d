"""The llamacpp teacher: requests → completions calls against the scripted server, its
one-line errors, ``auto``'s choice, real llama.cpp on the tiny model's GGUF, and (slow) the
real offline GGUF with two slots."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from teacher_server import Server
from thinksearch import format as fmt
from thinksearch import teacher_choice, teacher_llamacpp
from thinksearch.config import TeacherConfig
from thinksearch.errors import ThinksearchError
from thinksearch.teacher import TeacherRequest
from thinksearch.teacher_choice import make_teacher, pick_backend
from thinksearch.teacher_llamacpp import LlamaCppTeacher

ALIAS = "qwen2.5-coder-0.5b-instruct"


def _msgs(prompt: str) -> list[dict]:
    return [{"role": "system", "content": "你是老师。"}, {"role": "user", "content": prompt}]


@pytest.fixture()
def scripted(monkeypatch, tmp_path):
    """A LlamaCppTeacher whose 'llama.cpp server' is the scripted server (no model is loaded)."""
    srv = Server().start()
    started = []

    def fake_start(gguf, threads=None, context_length=4096, parallel=1, cache_prompt=True, who=""):
        started.append(dict(gguf=gguf, threads=threads, context_length=context_length, parallel=parallel))
        return SimpleNamespace(listening_address=f"http://127.0.0.1:{srv.port}")

    monkeypatch.setattr("thinksearch.engines.llamacpp.start_server", fake_start)
    monkeypatch.setattr(teacher_llamacpp, "available", lambda: True)
    gguf = tmp_path / "teacher.gguf"
    gguf.write_bytes(b"GGUF")
    yield srv, started, gguf
    srv.stop()


def test_requests_become_completions_of_the_rendered_prompt(scripted, tiny_tokenizer):
    srv, started, gguf = scripted
    t = LlamaCppTeacher(TeacherConfig(backend="llamacpp", model=str(gguf), parallel=3, threads=2), tokenizer=tiny_tokenizer)
    reqs = [TeacherRequest(_msgs("请写出思考过程。\n\n问题：为什么天是蓝的？"), max_tokens=64, temperature=0.7, top_p=0.9, seed=7),
            TeacherRequest(_msgs("请写出思考过程。\n\n问题：[截断] 长问题"), max_tokens=5, temperature=0.0, top_p=1.0),
            TeacherRequest(_msgs("请写出思考过程。\n\n问题：[R1] 推理题"), max_tokens=32, seed=0)]
    try:
        t.check()
        replies = t.generate(reqs)
    finally:
        t.close()
    assert started == [dict(gguf=gguf, threads=2, context_length=4096, parallel=3)]
    assert t.concurrency == 3 and t.name == f"llamacpp:{gguf}"
    bodies = {b["prompt"]: b for b in srv.completion_bodies}
    for req in reqs:
        # The teacher's own chat template renders the prompt; the server gets it verbatim.
        body = bodies[fmt.render(tiny_tokenizer, req.messages, add_generation_prompt=True)]
        assert (body["max_tokens"], body["temperature"], body["top_p"]) == (req.max_tokens, req.temperature, req.top_p)
        assert body.get("seed") == req.seed and ("seed" in body) == (req.seed is not None)
    a, b, c = replies
    assert "为什么天是蓝的" in a.text and a.finish_reason == "stop" and a.reasoning is None
    assert b.finish_reason == "length"
    assert c.reasoning.startswith("嗯，用户问的是") and c.text == "分析：按条件逐步计算即可。"
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 and r.error is None for r in replies)


def test_without_xllamacpp_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # makes `import xllamacpp` fail
    with pytest.raises(ThinksearchError) as e:
        make_teacher(TeacherConfig(backend="llamacpp"))
    assert "pip install 'thinksearch[llamacpp]'" in str(e.value) and "\n" not in str(e.value)
    from thinksearch.engines.llamacpp import start_server

    with pytest.raises(ThinksearchError, match=r"^the llamacpp teacher needs xllamacpp: pip install 'thinksearch\[llamacpp\]'"):
        start_server(Path("teacher.gguf"), who="the llamacpp teacher")


def test_a_model_that_is_not_a_gguf_is_refused(tiny_model_dir):
    with pytest.raises(ThinksearchError) as e:
        LlamaCppTeacher(TeacherConfig(backend="llamacpp", model=str(tiny_model_dir)))
    assert str(e.value) == (f"the llamacpp teacher needs a GGUF model; {str(tiny_model_dir)!r} is not a .gguf file or an "
                            "offline alias (use --teacher-backend local, or convert the model to GGUF)")


def test_a_teacher_without_chat_template_is_named(scripted, tiny_tokenizer):
    import copy

    _, started, gguf = scripted
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ThinksearchError) as e:
        LlamaCppTeacher(TeacherConfig(backend="llamacpp", model=str(gguf)), tokenizer=tok)
    assert str(e.value) == (f"the llamacpp teacher {gguf} has no chat template; "
                            "give --teacher-model the GGUF of a chat (instruct) model")
    assert started == []  # refused before llama.cpp loads anything


def test_a_broken_gguf_is_one_line_naming_the_file(tiny_tokenizer, tmp_path):
    pytest.importorskip("xllamacpp")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ThinksearchError, match=rf"^llama.cpp could not load {bad}: ") as e:
        LlamaCppTeacher(TeacherConfig(backend="llamacpp", model=str(bad), threads=1, max_model_len=256), tokenizer=tiny_tokenizer)
    assert "\n" not in str(e.value)


def test_auto_picks_llamacpp_only_for_a_gguf_with_xllamacpp(monkeypatch, tmp_path, tiny_model_dir):
    gguf = tmp_path / "t.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(teacher_llamacpp, "available", lambda: True)
    monkeypatch.setattr(teacher_choice, "local_is_fast", lambda cfg: False)
    assert pick_backend(TeacherConfig(backend="auto", model=str(gguf))) == "llamacpp"
    assert pick_backend(TeacherConfig(backend="auto", model=str(tiny_model_dir))) == "local"
    assert pick_backend(TeacherConfig(backend="local", model=str(gguf))) == "local"
    monkeypatch.setattr(teacher_llamacpp, "available", lambda: False)
    assert pick_backend(TeacherConfig(backend="auto", model=str(gguf))) == "local"


def test_auto_keeps_transformers_where_it_computes_in_bf16_or_on_a_gpu(monkeypatch, tmp_path):
    from thinksearch import models

    gguf = tmp_path / "t.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(teacher_llamacpp, "available", lambda: True)
    monkeypatch.setattr(models, "pick_device", lambda device="auto": "cpu" if device == "auto" else device)
    for bf16, dtype, device, want in [(True, "auto", "auto", "local"), (False, "auto", "auto", "llamacpp"),
                                      (True, "float32", "auto", "llamacpp"), (False, "auto", "cuda", "local")]:
        monkeypatch.setattr(models, "cpu_has_bf16", lambda bf16=bf16: bf16)
        assert pick_backend(TeacherConfig(backend="auto", model=str(gguf), dtype=dtype, device=device)) == want, (bf16, dtype, device)


def test_auto_without_xllamacpp_falls_back_to_local(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    gguf = tmp_path / "t.gguf"
    gguf.write_bytes(b"GGUF")
    assert not teacher_llamacpp.available()
    assert pick_backend(TeacherConfig(backend="auto", model=str(gguf))) == "local"


def test_backend_flag_accepts_llamacpp_and_names_the_choices(capsys):
    from thinksearch import cli

    with pytest.raises(SystemExit):
        cli.main(["synth", "--teacher-backend", "bogus"])
    err = capsys.readouterr().err
    assert "argument --teacher-backend: invalid choice: 'bogus'" in err and "'llamacpp'" in err and "'auto'" in err
    with pytest.raises(ThinksearchError, match=r"--parallel \(parallel\): must be > 0"):
        TeacherConfig(backend="llamacpp", parallel=0)


def test_real_llamacpp_on_the_tiny_gguf(tiny, tmp_path):
    """The real server path in seconds: the tiny random model's GGUF, two slots."""
    pytest.importorskip("xllamacpp")
    from test_gguf_export import reference_gguf

    model, tok = tiny
    gguf = reference_gguf(model, tok, tmp_path / "tiny.gguf")
    t = LlamaCppTeacher(TeacherConfig(backend="llamacpp", model=str(gguf), parallel=2, threads=1, max_model_len=256),
                        tokenizer=tok)
    reqs = [TeacherRequest(_msgs(q), max_tokens=6, temperature=0.8, seed=s) for q, s in [("天气？", 3), ("价格", 4), ("天气？", 3)]]
    try:
        first = t.generate(reqs)
        solo = [t.generate(reqs[:1])[0].text for _ in range(2)]
    finally:
        t.close()
    for r, req in zip(first, reqs):
        prompt = fmt.render(tok, req.messages, add_generation_prompt=True)
        assert r.error is None and r.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert 0 < r.completion_tokens <= 6 and r.finish_reason in ("stop", "length")
    assert solo[0] == solo[1]  # the same seed, the same sample


@pytest.mark.slow
def test_real_offline_gguf_with_two_slots():
    from thinksearch import models

    if not teacher_llamacpp.available():
        pytest.skip("xllamacpp is not installed")
    if not models.is_prepared(ALIAS):
        pytest.skip(f"{ALIAS} is not prepared (thinksearch models prepare {ALIAS})")
    t = make_teacher(TeacherConfig(backend="llamacpp", model=ALIAS, parallel=2, max_model_len=1024))
    assert isinstance(t, LlamaCppTeacher)
    reqs = [TeacherRequest([{"role": "user", "content": "1加1等于几？只回答数字。"}], max_tokens=32, temperature=0.0),
            TeacherRequest([{"role": "user", "content": "请详细解释为什么天空是蓝色的。"}], max_tokens=12, temperature=0.7, seed=11),
            TeacherRequest([{"role": "user", "content": "写一首关于秋天的诗。"}], max_tokens=12, temperature=0.9, seed=5)]
    try:
        t.check()
        first = t.generate(reqs)
        # Alone, so both runs decode in the same batches: llama.cpp's batched decoding is not
        # batch-invariant, and other neighbours in the slots can change a late token of a sample.
        solo = [[t.generate([r])[0].text for r in reqs] for _ in range(2)]
    finally:
        t.close()
    short, long_, poem = first
    assert "2" in short.text and short.finish_reason == "stop" and 0 < short.completion_tokens < 32
    assert long_.finish_reason == "length" and long_.completion_tokens == 12 and long_.text
    assert poem.finish_reason == "length" and poem.text
    for r, req in zip(first, reqs):
        prompt = fmt.render(t.tokenizer, req.messages, add_generation_prompt=True)
        assert r.prompt_tokens == len(t.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert solo[0] == solo[1]  # seeded samples (and greedy) repeat
    assert solo[0][0] == short.text  # greedy: the same answer with a neighbour in the other slot
