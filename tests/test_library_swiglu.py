"""The SwiGLU library on the CPU backend: both strategies against a float32 torch reference, the torch
module's argument checks, the scheduler's profiles, and a patched transformers model."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import evtdsl as evt  # noqa: E402
from evtdsl.library import mlp, scheduler, swiglu  # noqa: E402


def reference(x, w_gu, w_d, residual=None):
    g, u = (x.float() @ w_gu.float().T).chunk(2, dim=-1)
    y = (torch.nn.functional.silu(g) * u) @ w_d.float().T
    return y if residual is None else y + residual.float()


def weights(k, n, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_gu = (torch.randn(2 * n, k, generator=g) / k**0.5).to(dtype)
    w_d = (torch.randn(k, n, generator=g) / n**0.5).to(dtype)
    return w_gu, w_d


def rel(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


CONFIGS = [swiglu.Config("fused", bm=16, bn=64), swiglu.Config("two_phase", bm=16, bn=64, chunk=2),
           swiglu.Config("fused", bm=32, bn=32, bc=64),
           # down tiles of their own step: 128 columns of h, twice the gate/up tiles' 64
           swiglu.Config("two_phase", bm=16, bn=64, bk=64, bc=64, chunk=2, bkd=128),
           # one event for all of h: down tiles reduce whole rows of w_down and write y
           swiglu.Config("two_phase", bm=16, bn=64, bk=64, bc=64, chunk=0, bkd=128)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("m", [1, 2, 3, 7, 16, 33, 64, 128])
def test_variants_match_torch(cfg, m):
    k, n = 128, 320
    w_gu, w_d = weights(k, n, seed=m)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(100 + m)).to(torch.bfloat16)
    res = torch.randn(m, k, generator=torch.Generator().manual_seed(200 + m)).to(torch.bfloat16)
    y = mlp.run_variant(cfg, x, w_gu, w_d, res, workers=4, schedule="dynamic", seed=m)
    assert rel(y, reference(x, w_gu, w_d, res)) < 1e-2


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 40), k=st.sampled_from([64, 128, 192]), n=st.sampled_from([64, 128, 256, 384]),
       strategy=st.sampled_from(["fused", "two_phase"]), dtype=st.sampled_from(["bf16", "f16"]),
       seed=st.integers(0, 1000))
def test_random_shapes(m, k, n, strategy, dtype, seed):
    tdt = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    cfg = swiglu.Config(strategy, chunk=3)
    w_gu, w_d = weights(k, n, tdt, seed)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(tdt)
    y = mlp.run_variant(cfg, x, w_gu, w_d, torch.zeros_like(x), workers=3, seed=seed)
    assert rel(y, reference(x, w_gu, w_d)) < 1e-2


@pytest.mark.parametrize("kwargs,match", [
    (dict(strategy="split_k"), r"Config.strategy: expected 'fused' or 'two_phase', got 'split_k'"),
    (dict(strategy="fused", bm=0), r"Config.bm: expected a positive int, got 0"),
    (dict(strategy="fused", bn=64.0), r"Config.bn: expected a positive int, got 64.0"),
    (dict(strategy="two_phase", bn=64, chunk=1, bk=128), r"Config.bk: .*64 \* 1 = 64.*got bk=128"),
    (dict(strategy="two_phase", bn=64, chunk=3, bk=128), r"Config.bk: .*= 192.*got bk=128"),
    (dict(strategy="two_phase", stream=2), r"Config.stream: expected 0 or 1, got 2"),
    (dict(strategy="two_phase", stream=True), r"Config.stream: expected 0 or 1, got True"),
    (dict(strategy="fused", chunk=0), r"Config.chunk: expected a positive int \(or 0 for two_phase\), got 0"),
    (dict(strategy="two_phase", chunk=-1), r"Config.chunk: expected a positive int \(or 0 for two_phase\), got -1"),
    (dict(strategy="two_phase", chunk=False), r"Config.chunk: expected .*, got False"),
    (dict(strategy="two_phase", bkd=-64), r"Config.bkd: expected 0 \(bk\) or a positive int, got -64"),
    (dict(strategy="fused", bkd=128), r"Config.bkd: only two_phase .*got bkd=128 for strategy 'fused'"),
    (dict(strategy="two_phase", bn=64, chunk=3, bk=64, bkd=128), r"Config.bkd: .*= 192.*got bkd=128"),
])
def test_config_rejects_bad_tiles(kwargs, match):
    with pytest.raises(ValueError, match=match):
        swiglu.Config(**kwargs)


def test_config_bk_may_exceed_one_tile_when_the_chunk_holds_it():
    assert swiglu.Config("two_phase", bn=64, chunk=2, bk=128).name == "two_phase_bm16_bn64_bk128_bc256_ch2"
    assert swiglu.Config("fused", bn=32, bk=128).bk == 128
    wide_down = swiglu.Config("two_phase", bn=64, chunk=8, bk=128, bc=16, bkd=512, stream=1)
    assert wide_down.name == "two_phase_bm16_bn64_bk128_bc16_ch8_bkd512_stream" and wide_down.down_step == 512
    assert swiglu.Config("two_phase", bn=64, chunk=2, bk=128).down_step == 128
    whole = swiglu.Config("two_phase", bn=64, chunk=0, bk=128, bc=16, bkd=512)
    assert whole.name == "two_phase_bm16_bn64_bk128_bc16_whole_bkd512"
    assert swiglu.workspace_shapes(whole, 3, 256, 512) == [((3, 512), "x")]


def test_module_from_linear_and_residual():
    k, n = 64, 192
    lin = [torch.nn.Linear(k, n, bias=False), torch.nn.Linear(k, n, bias=False), torch.nn.Linear(n, k, bias=False)]
    for layer in lin:
        layer.to(torch.bfloat16)
    mod = mlp.FusedSwiGLU.from_linear(*lin)
    x = torch.randn(2, 3, k).to(torch.bfloat16)
    r = torch.randn(2, 3, k).to(torch.bfloat16)
    y = mod(x, residual=r)
    g, u, d = (layer.weight.float() for layer in lin)
    ref = (torch.nn.functional.silu(x.float() @ g.T) * (x.float() @ u.T)) @ d.T + r.float()
    assert y.shape == x.shape and rel(y, ref) < 1e-2


def test_module_argument_errors():
    w_gu, w_d = weights(128, 192)
    with pytest.raises(ValueError, match="hidden size K must be a multiple of 64, got 100"):
        mlp.FusedSwiGLU(torch.zeros(384, 100, dtype=torch.bfloat16), torch.zeros(100, 192, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"w_down: expected shape \[K, N\] = \[128, 192\]"):
        mlp.FusedSwiGLU(w_gu, w_d.T.contiguous())
    with pytest.raises(TypeError, match="weights must both be bf16 or f16"):
        mlp.FusedSwiGLU(w_gu.float(), w_d.float())
    mod = mlp.FusedSwiGLU(w_gu, w_d)
    with pytest.raises(ValueError, match="x: expected last dimension 128"):
        mod(torch.zeros(3, 64, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="x: expected torch.bfloat16"):
        mod(torch.zeros(3, 128))


def test_streamed_config_is_a_launch_option_of_the_same_megakernel():
    plain = swiglu.Config("two_phase", bn=64, chunk=2)
    streamed = swiglu.Config("two_phase", bn=64, chunk=2, stream=1)
    assert streamed.name == plain.name + "_stream"
    assert swiglu.megakernel_for(streamed, evt.bf16) is swiglu.megakernel_for(plain, evt.bf16)
    assert mlp.codegen_options(streamed) == {"stream": True, "inline_tasks": True} and not mlp.codegen_options(plain)
    # profiles name the choice field by field; entries written before the field existed read as stream=0
    assert scheduler._decode(scheduler.encode(streamed)) == streamed
    assert scheduler._decode("strategy=two_phase,bm=16,bn=64,bk=64,bc=256,chunk=2") == plain
    names = swiglu.evtdsl_megakernels()
    assert len(set(map(id, names.values()))) == len(names)  # every megakernel built once


def test_scheduler_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("EVTDSL_CACHE_DIR", str(tmp_path))
    assert scheduler.bucket(1) == 1 and scheduler.bucket(5) == 8 and scheduler.bucket(10_000) == 512
    s = scheduler.Scheduler()
    assert s.pick("Some GPU", 4096, 14336, "bf16", 3) == scheduler.TORCH  # untuned: never slower than torch
    assert s.pick("cpu", 4096, 14336, "bf16", 3) == scheduler.CPU_DEFAULT

    fast = swiglu.Config("two_phase", bm=64, bn=64, chunk=8)

    def time_variant(choice, m):  # a stand-in timer: the DSL variant wins below M=16, torch above
        if choice == scheduler.TORCH:
            return 10.0
        return 5.0 if choice == fast and m < 16 else 20.0

    scheduler.tune("Some GPU", 4096, 14336, "bf16", time_variant, m_buckets=[1, 8, 32], progress=False)
    s.reload()
    assert s.pick("Some GPU", 4096, 14336, "bf16", 3) == fast
    assert s.pick("Some GPU", 4096, 14336, "bf16", 20) == scheduler.TORCH
    saved = json.loads(scheduler.user_profile_path().read_text())["entries"]
    assert saved[scheduler.key("Some GPU", 4096, 14336, "bf16", 8)]["us"]["torch"] == pytest.approx(10e6)


def test_scheduler_keeps_torch_unless_a_variant_wins_by_the_margin():
    edge = 10.0 * (1 - scheduler.MARGIN)
    assert scheduler.choose({"torch": 10.0, "a": 9.9, "b": 9.8}) == scheduler.TORCH  # inside the noise
    assert scheduler.choose({"torch": 10.0, "a": edge, "b": 11.0}) == "a"
    assert scheduler.choose({"torch": 10.0, "a": None}) == scheduler.TORCH
    assert scheduler.choose({"torch": None, "a": 12.0}) == "a"  # torch ruled out: the only valid time
    with pytest.raises(ValueError, match="no valid time"):
        scheduler.choose({"torch": None, "a": None})


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def test_patched_llama_generates_the_same_tokens():
    model = _tiny_llama()
    prompt = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=32, do_sample=False)
        assert mlp.patch_model(model) == 2
        got = model.generate(prompt, max_new_tokens=32, do_sample=False)
    assert isinstance(model.model.layers[0].mlp, mlp._PatchedMLP)
    assert torch.equal(got, expected), (got, expected)


def test_shipped_profiles_cover_the_benchmark_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("EVTDSL_CACHE_DIR", str(tmp_path))  # no user profile: only what ships
    entries = scheduler.load_profiles()
    for gpu in ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        for k, n in ((2048, 8192), (4096, 14336), (8192, 3584)):
            for m in (1, 2, 4, 8, 16, 32, 64, 128):
                entry = entries[scheduler.key(gpu, k, n, "bf16", m)]
                # the pick is the measured fastest, so it is never slower than the torch path
                assert entry["us"][entry["choice"]] <= entry["us"]["torch"]


def test_library_importable_from_a_checkout_on_pythonpath(tmp_path):
    """On a lent GPU machine the repo is only on PYTHONPATH: evtdsl.library must still resolve to library/."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            "for name in [n for n in sys.modules if n.startswith('evtdsl')]: del sys.modules[name]\n"
            "import evtdsl.library.swiglu as s\n"
            "print(s.__file__)\n")
    env = {"PYTHONPATH": str(repo), "PATH": ""}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == repo / "library" / "swiglu.py"
