"""RTN weight-only sweep on the real SmolLM2-135M (eager fake-quant, 4096 held-out tokens, 512-token
windows, 1 thread): how far plain rounding is from the +4% int4 goal, per recipe. Run in a venv with
gguf + accelerate (see bench/real_model.py): python -m bench.quality.real_rtn_sweep"""
import sys, time, torch, json
from transformers import AutoModelForCausalLM
from tokenizers import Tokenizer
torch.set_num_threads(1)
from bench.real_model import fetch
_m = fetch()
tok = Tokenizer.from_file(str(_m.hf_dir / "tokenizer.json"))
ids = torch.tensor(tok.encode(_m.heldout.read_text(encoding="utf-8")).ids[:4096])
base = AutoModelForCausalLM.from_pretrained(str(_m.hf_dir), dtype=torch.float32).eval()
orig = {k: v.clone() for k, v in base.state_dict().items()}

def fq(w, bits, g, sym):
    o, i = w.shape; g = g or i
    wg = w.reshape(o, i // g, g)
    if sym:
        qmax = 2 ** (bits - 1) - 1
        s = wg.abs().amax(-1, keepdim=True) / qmax; s[s == 0] = 1
        return (torch.clamp(torch.round(wg / s), -qmax - 1, qmax) * s).reshape(o, i)
    lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    s = (hi - lo) / (2 ** bits - 1); s[s == 0] = 1
    zp = torch.round(-lo / s)
    return ((torch.clamp(torch.round(wg / s) + zp, 0, 2 ** bits - 1) - zp) * s).reshape(o, i)

@torch.no_grad()
def ppl(model):
    nll, n = 0.0, 0
    for s in range(0, len(ids) - 1, 512):
        x = ids[s:s + 513]
        if len(x) < 2: break
        lg = model(x[None, :-1]).logits[0]
        nll += torch.nn.functional.cross_entropy(lg, x[1:], reduction="sum").item(); n += len(x) - 1
    return float(torch.exp(torch.tensor(nll / n)))

def apply(recipe):
    sd = {}
    for k, v in orig.items():
        if k.endswith("embed_tokens.weight"):
            sd[k] = fq(v, recipe.get("emb_bits", 8), recipe.get("emb_g", None), recipe.get("emb_sym", True)) if recipe.get("emb_bits") else v
        elif v.ndim == 2 and "proj" in k:
            bits = recipe["bits"]
            for pat, b in recipe.get("override", {}).items():
                if pat in k: bits = b
            sd[k] = fq(v, bits, recipe["g"] if bits == 4 else None, recipe["sym"])
        else:
            sd[k] = v
    base.load_state_dict(sd, strict=False)

t = time.time(); p0 = ppl(base); print("fp32", p0, time.time() - t, flush=True)
R = {
 "int4 g32 sym (emb int8)": dict(bits=4, g=32, sym=True, emb_bits=8),
 "int4 g32 asym (emb int8)": dict(bits=4, g=32, sym=False, emb_bits=8),
 "int4 g32 asym, down int8 (emb int8)": dict(bits=4, g=32, sym=False, emb_bits=8, override={"down_proj": 8}),
 "int4 g32 asym, down+v int8": dict(bits=4, g=32, sym=False, emb_bits=8, override={"down_proj": 8, "v_proj": 8}),
 "int4 g64 asym": dict(bits=4, g=64, sym=False, emb_bits=8),
}
res = {"fp32": p0}
for name, r in R.items():
    apply(r); p = ppl(base); res[name] = p
    print(f"{name}: {p:.3f} ({(p/p0-1)*100:+.1f}%)", flush=True)
json.dump(res, open("bench/results/real-rtn-sweep.json", "w"), indent=1)
