import json

import pytest

from slmpack.device_tests.fit import MB, fit_check, load_facts
from slmpack.exporter.spec import count_parameters
from slmpack.errors import BadInputError

# TinyLlama-1.1B's config.json (architecture numbers only).
TINYLLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
             "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
             "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 2048,
             "tie_word_embeddings": False}


@pytest.fixture
def tinyllama(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINYLLAMA))
    return tmp_path


def test_parameter_count_matches_torch(tiny_llama):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert load_facts(tiny_llama).model.num_parameters == sum(p.numel() for p in model.parameters())


def test_tinyllama_numbers(tinyllama):
    assert count_parameters(32000, 2048, 5632, 22, 32, 4, 64, False) == 1_100_048_384
    r = fit_check(tinyllama, "rpi5", context=2048, bits=16)
    assert r.num_parameters == 1_100_048_384
    assert r.weights_mb == pytest.approx(1_100_048_384 * 2 / MB, abs=0.1)  # 2098.2
    assert r.kv_cache_mb == pytest.approx(2 * 22 * 4 * 64 * 2048 * 4 / MB, abs=0.1)  # 88.0 (fp32 KV)
    assert r.needed_mb == pytest.approx(r.weights_mb + r.kv_cache_mb + r.activations_mb + r.overhead_mb, abs=0.2)
    assert r.fits and r.available_mb == 7168
    # decode bound: bandwidth / (weights - untied input embedding + KV at 2048)
    per_token = 1_100_048_384 * 2 - 32000 * 2048 * 2 + 2 * 22 * 4 * 64 * 2048 * 4
    assert r.bytes_per_token == per_token
    assert r.decode_tok_s_upper == pytest.approx(17.1e9 / per_token, rel=1e-3)  # ~8.2 tok/s
    r4 = fit_check(tinyllama, "rpi5", context=2048, bits=4.5)
    assert r4.weights_mb == pytest.approx(r.weights_mb * 4.5 / 16, abs=0.1)
    assert r4.decode_tok_s_upper > 3 * r.decode_tok_s_upper


def test_too_big_for_rpi4_names_the_numbers(tinyllama):
    with pytest.raises(BadInputError) as err:
        fit_check(tinyllama, "rpi4", context=2048, bits=32)
    e = err.value
    assert e.code == "E_FIT_TOO_BIG"
    needed = e.details["needed_mb"]
    assert needed > 4196 and e.details["available_mb"] == 3584
    assert f"needs {needed:.0f} MB" in e.message and "3584 MB available" in e.message
    assert not fit_check(tinyllama, "rpi4", context=2048, bits=32, strict=False).fits
    assert fit_check(tinyllama, "rpi4", context=2048, bits=4.5).fits


def test_package_input_uses_artifact_size(tiny_package):
    r = fit_check(tiny_package, "rpi5-emulated", bits=4)
    assert r.weights_mb == pytest.approx((tiny_package / "model.onnx").stat().st_size / MB, abs=0.05)
    assert r.format == "onnx" and r.format_supported
    assert any("ignored" in n for n in r.notes)
    assert r.context == 64  # the package's max_context (conftest TINY_TRACE)
    r_ios = fit_check(tiny_package, "iphone15pro")
    assert r_ios.format_supported  # iphone15pro lists onnxruntime too


@pytest.mark.parametrize("kwargs, code", [({"context": 4096}, "E_FIT_CONTEXT"), ({"bits": 64}, "E_FIT_BITS")])
def test_bad_arguments(tinyllama, kwargs, code):
    with pytest.raises(BadInputError) as err:
        fit_check(tinyllama, "rpi5", **kwargs)
    assert err.value.code == code


def test_bad_model_dirs(tmp_path):
    with pytest.raises(BadInputError):
        fit_check(tmp_path, "rpi5")
    (tmp_path / "config.json").write_text(json.dumps({**TINYLLAMA, "hidden_size": "big"}))
    with pytest.raises(BadInputError) as err:
        fit_check(tmp_path, "rpi5")
    assert "hidden_size" in str(err.value)
    with pytest.raises(BadInputError) as err:
        fit_check(tmp_path, "toaster")


def test_encoder_model_dir_fit(minilm_st):
    """MiniLM geometry (6 x 384, 12 heads, FFN 1536), fp32: weights = torch's parameter count x 4 bytes;
    activations at batch 32 x 128 = 4 B x 32 x 128 x (6*384 + 2*1536 + 2*12*128) = 132.0 MB."""
    from transformers import BertModel

    params = sum(p.numel() for p in BertModel.from_pretrained(str(minilm_st), add_pooling_layer=False).parameters())
    r = fit_check(minilm_st, "rpi4", context=128, batch=32)
    assert r.kind == "encoder" and r.num_parameters == params and r.bits_per_weight == 32
    assert r.weights_mb == pytest.approx(params * 4 / MB, abs=0.01)
    assert r.activations_mb == pytest.approx(132.0, abs=0.01) and (r.run_batch, r.run_sequence) == (32, 128)
    assert r.needed_mb == pytest.approx(params * 4 / MB * 1.05 + 132.0 + 110, abs=0.1)  # onnx runtime overhead
    assert r.fits and "batch 32 x sequence 128" in r.message()
    with pytest.raises(BadInputError) as err:  # 4096 x 256: 45 GB of activations
        fit_check(minilm_st, "rpi4", context=256, batch=4096)
    assert err.value.code.value == "E_FIT_TOO_BIG"
    with pytest.raises(BadInputError) as err:
        fit_check(minilm_st, "rpi4", context=257)  # sentence_bert_config max_seq_length 256
    assert err.value.code.value == "E_FIT_CONTEXT"


def test_encoder_package_fit_uses_the_artifact_and_its_signatures(encoder_package, tiny_llama, capsys):
    from slmpack.cli import main

    pkg = encoder_package("tiny_bert_cls", "tflite").path
    r = fit_check(pkg, "rpi5", context=100, batch=8)
    assert r.weights_mb == pytest.approx((pkg / "model.tflite").stat().st_size / MB, abs=0.01)
    assert (r.run_batch, r.run_sequence) == (1, 128)  # batch-1 signatures; the next length that holds 100
    assert r.format == "tflite" and r.format_supported and r.overhead_mb >= 60
    assert main(["fit", str(pkg), "-d", "rpi5", "--batch", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "encoder" and doc["batch"] == 4 and doc["sequence"] == 512  # default: max sequence
    with pytest.raises(BadInputError) as err:
        fit_check(tiny_llama, "rpi5", batch=4)
    assert err.value.code.value == "E_FIT_CONTEXT"
