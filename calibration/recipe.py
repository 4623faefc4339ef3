"""Quantization recipes: an ordered list of rules, first match wins (ExecuTorch quant recipes).

A rule's ``pattern`` is matched with :func:`fnmatch.fnmatchcase` against the weight tensor's name
(``model.layers.3.mlp.up_proj.weight``; ``*`` also matches dots). ``weight=None`` keeps the
tensor float. Tensors matched by no rule stay float. Only Linear and Embedding weights are
considered. A recipe says *what* precision a tensor gets, never how a target packs it.

Recipe files (JSON or TOML, chosen by suffix)::

    name = "my-recipe"
    [[rules]]
    pattern = "lm_head.weight"
    weight = "float"                       # or a table; JSON may also use null
    [[rules]]
    pattern = "model.layers.*"
    weight = { bits = 4, group_size = 32, symmetric = true, algorithm = "gptq" }
    activation = { mode = "dynamic_int8" } # optional, default float activations
    fallback = { bits = 8 }                # optional: for a tensor the group size does not fit

``group_size`` may be omitted or 0 for per-channel (TOML has no null). ``fallback`` is the scheme
for a matched tensor whose input width the rule's group size does not divide (llama.cpp's rule for
rows that are not a multiple of the block); without one such a tensor makes the plan invalid.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from slmpack.errors import BadInputError

from .schemes import (FLOAT_ACTIVATIONS, ActivationMode, ActivationScheme, Algorithm, Observer,
                      WeightScheme)


@dataclass(frozen=True)
class Rule:
    pattern: str
    weight: WeightScheme | None
    activation: ActivationScheme = FLOAT_ACTIVATIONS
    fallback: WeightScheme | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise BadInputError("Rule.pattern must be a non-empty string", "E_RECIPE_RULE",
                                details={"field": "pattern"})
        if self.fallback is not None and self.fallback.group_size is not None:
            raise BadInputError("Rule.fallback must be per-channel (it is used where a group size "
                                "does not fit)", "E_RECIPE_RULE", details={"field": "fallback"})

    def scheme_for(self, in_features: int) -> WeightScheme | None:
        """The weight scheme for a matched tensor of ``in_features`` input columns."""
        w = self.weight
        if w is not None and w.group_size and in_features % w.group_size and self.fallback:
            return self.fallback
        return w

    def to_dict(self) -> dict:
        out = {"pattern": self.pattern,
               "weight": None if self.weight is None else self.weight.to_dict(),
               "activation": self.activation.to_dict()}
        if self.fallback is not None:
            out["fallback"] = self.fallback.to_dict()
        return out


@dataclass(frozen=True)
class Recipe:
    name: str
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))

    def match(self, tensor_name: str) -> tuple[int, Rule] | None:
        """(index, rule) of the first rule whose pattern matches, or None (keep float)."""
        for i, rule in enumerate(self.rules):
            if fnmatchcase(tensor_name, rule.pattern):
                return i, rule
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "rules": [r.to_dict() for r in self.rules]}


W8_PC = WeightScheme(bits=8, group_size=None, symmetric=True, algorithm=Algorithm.RTN)
W4_G32 = WeightScheme(bits=4, group_size=32, symmetric=True, algorithm=Algorithm.RTN)
A8_DYNAMIC = ActivationScheme(mode=ActivationMode.DYNAMIC_INT8)
A8_STATIC = ActivationScheme(mode=ActivationMode.STATIC_INT8, observer=Observer.MINMAX)
A8_STATIC_SQ = ActivationScheme(mode=ActivationMode.STATIC_INT8, observer=Observer.MINMAX,
                                smoothquant_alpha=0.5)
_EMBED = "model.embed_tokens.weight"
_HEAD = "lm_head.weight"

PRESETS: dict[str, Recipe] = {
    # every Linear and Embedding weight: int8 per-channel symmetric RTN
    "int8": Recipe("int8", (Rule("*", W8_PC),)),
    # decoder layers int4 g32; embeddings and lm_head int8 per-channel
    # (a layer whose input width 32 does not divide keeps int8 per-channel, as llama.cpp does)
    "int4": Recipe("int4", (Rule(_EMBED, W8_PC), Rule(_HEAD, W8_PC),
                            Rule("model.layers.*", W4_G32, fallback=W8_PC))),
    # decoder linears: dynamic per-token int8 activations x int4 g32 weights; lm_head int8
    # weights (same as the embedding it is often tied to) with dynamic int8 activations
    "8da4w": Recipe("8da4w", (Rule(_EMBED, W8_PC), Rule(_HEAD, W8_PC, A8_DYNAMIC),
                              Rule("model.layers.*", W4_G32, A8_DYNAMIC, W8_PC))),
    # decoder linears and lm_head: dynamic per-token int8 activations x int8 per-channel weights
    "8da8w": Recipe("8da8w", (Rule(_EMBED, W8_PC), Rule(_HEAD, W8_PC, A8_DYNAMIC),
                              Rule("model.layers.*", W8_PC, A8_DYNAMIC))),
    # static per-tensor int8 activations (min-max) x int8 weights; SmoothQuant (alpha 0.5) on
    # the linears fed by an RMSNorm (q/k/v, gate/up), as in the SmoothQuant reference for Llama
    "w8a8": Recipe("w8a8", (Rule(_EMBED, W8_PC),
                            Rule("model.layers.*.self_attn.[qkv]_proj.weight", W8_PC, A8_STATIC_SQ),
                            Rule("model.layers.*.mlp.gate_proj.weight", W8_PC, A8_STATIC_SQ),
                            Rule("model.layers.*.mlp.up_proj.weight", W8_PC, A8_STATIC_SQ),
                            Rule("*", W8_PC, A8_STATIC))),
}


def preset(name: str) -> Recipe:
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInputError(f"unknown quantization preset {name!r} (choose from "
                            f"{', '.join(sorted(PRESETS))})", "E_RECIPE_PRESET") from None


_RULE_KEYS = {"pattern", "weight", "activation", "fallback"}
_WEIGHT_KEYS = {"bits", "group_size", "symmetric", "algorithm"}
_ACT_KEYS = {"mode", "observer", "percentile", "symmetric", "smoothquant_alpha"}


def _rule_error(where: str, message: str) -> BadInputError:
    return BadInputError(f"{where}: {message}", "E_RECIPE_RULE", details={"where": where})


def _table(value, keys: set[str], where: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise _rule_error(where, f"'{what}' must be a table/object, got {value!r}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise _rule_error(where, f"unknown key(s) in '{what}': {', '.join(unknown)} "
                                 f"(allowed: {', '.join(sorted(keys))})")
    return dict(value)


def _parse_rule(raw, where: str) -> Rule:
    rule = _table(raw, _RULE_KEYS, where, "rule")
    if "pattern" not in rule or "weight" not in rule:
        raise _rule_error(where, "needs 'pattern' and 'weight' (use weight = \"float\" to keep "
                                 "a tensor float)")
    try:
        weight = rule["weight"]
        if weight is None or weight == "float":
            ws = None
        else:
            w = _table(weight, _WEIGHT_KEYS, where, "weight")
            if w.get("group_size") == 0:
                w["group_size"] = None
            ws = WeightScheme(**w)
        fb = rule.get("fallback")
        fallback = None if fb is None else WeightScheme(**_table(fb, _WEIGHT_KEYS, where, "fallback"))
        act = _table(rule.get("activation", {}), _ACT_KEYS, where, "activation")
        return Rule(rule["pattern"], ws, ActivationScheme(**act), fallback)
    except TypeError as exc:  # missing required WeightScheme field
        raise _rule_error(where, str(exc)) from None
    except BadInputError as exc:
        raise _rule_error(where, exc.message) from None


def recipe_from_dict(data, source: str = "<recipe>") -> Recipe:
    """Build a Recipe from parsed JSON/TOML; errors name ``source`` and the rule number (1-based)."""
    if not isinstance(data, dict):
        raise _rule_error(source, "top level must be an object with 'name' and 'rules'")
    unknown = sorted(set(data) - {"name", "rules"})
    if unknown:
        raise _rule_error(source, f"unknown top-level key(s): {', '.join(unknown)}")
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        raise _rule_error(source, "'rules' must be a non-empty list")
    parsed = []
    for i, raw in enumerate(rules, start=1):
        pattern = raw.get("pattern") if isinstance(raw, dict) else None
        parsed.append(_parse_rule(raw, f"{source}: rule {i}"
                                       + (f" (pattern {pattern!r})" if pattern else "")))
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise _rule_error(source, "'name' must be a non-empty string")
    return Recipe(name, tuple(parsed))


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a ``.json`` or ``.toml`` file; parse errors name line and column."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"recipe file not found: {path}", "E_RECIPE_MISSING")
    text = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path.name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                                "E_RECIPE_PARSE", details={"line": exc.lineno}) from None
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:  # message ends with "(at line L, column C)"
            raise BadInputError(f"{path.name}: invalid TOML: {exc}", "E_RECIPE_PARSE") from None
    else:
        raise BadInputError(f"recipe file must end in .json or .toml: {path.name}",
                            "E_RECIPE_PARSE")
    return recipe_from_dict(data, path.name)
