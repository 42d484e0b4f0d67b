"""The SwiGLU library on a GPU: each strategy against a float32 torch reference at every M the issue names,
and a real-size patched Llama generating the same greedy tokens as the unpatched model."""
import pytest

torch = pytest.importorskip("torch")

from evtdsl.library import mlp, swiglu  # noqa: E402

pytestmark = pytest.mark.gpu

CONFIGS = [swiglu.Config("two_phase", bm=16, bn=64, chunk=8), swiglu.Config("fused", bm=16, bn=64),
           swiglu.Config("two_phase", bm=64, bn=64, chunk=8)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("m", [1, 2, 3, 7, 16, 33, 64, 128])
def test_variants_match_float32_reference(cfg, m):
    k, n = 2048, 1536
    g = torch.Generator(device="cuda").manual_seed(m)
    w_gu = (torch.randn(2 * n, k, device="cuda", generator=g) / k**0.5).bfloat16()
    w_d = (torch.randn(k, n, device="cuda", generator=g) / n**0.5).bfloat16()
    x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
    res = torch.randn(m, k, device="cuda", generator=g).bfloat16()
    y = mlp.run_variant(cfg, x, w_gu, w_d, res)
    gg, uu = (x.float() @ w_gu.float().T).chunk(2, dim=-1)
    ref = (torch.nn.functional.silu(gg) * uu) @ w_d.float().T + res.float()
    assert float((y.float() - ref).norm() / ref.norm()) < 1e-2


def test_patched_llama_generates_the_same_tokens_on_gpu():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                   num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8,
                                   max_position_embeddings=256)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    prompt = torch.randint(0, 32000, (1, 8), device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=32, do_sample=False)
        assert mlp.patch_model(model, variant=CONFIGS[0]) == 2
        got = model.generate(prompt, max_new_tokens=32, do_sample=False)
    assert torch.equal(got, expected), (got, expected)
