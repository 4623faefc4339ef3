"""A target's refusal names each distinct reason once, with its first subjects and a count."""
from slmpack.exporter.stages import summarize_problems
from slmpack.targets.base import Unsupported


def test_one_clause_per_reason():
    problems = [Unsupported(f"model.layers.{i}.mlp.up_proj.weight", "int4 weight-only linear: use 8da4w")
                for i in range(30)] + [Unsupported("--adapter-mode separate", "use merged")]
    text = summarize_problems(problems)
    assert text.count("use 8da4w") == 1 and text.count("use merged") == 1
    assert text.startswith("model.layers.0.mlp.up_proj.weight, model.layers.1.mlp.up_proj.weight, "
                           "model.layers.2.mlp.up_proj.weight and 27 more: int4")
    assert text.endswith("; --adapter-mode separate: use merged")
    assert summarize_problems(problems[:2]) == ("model.layers.0.mlp.up_proj.weight, model.layers.1.mlp.up_proj.weight: "
                                                "int4 weight-only linear: use 8da4w")
