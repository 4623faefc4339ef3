"""The ExecuTorch target: one model.pte with the KV cache in mutable buffers, XNNPACK-delegated,
runnable by ExecuTorch's own LLM runner (``TextLLMRunner``) as well as by the runtime kit's ``ExecuTorchAdapter``."""
from __future__ import annotations

from pathlib import Path

from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.targets.base import (Artifact, Capabilities, Consumes, ExecutedQuant, Readback, ReferenceRequest,
                                  ReferenceTrace, TargetName, Tolerance, Unsupported)
from slmpack.targets.executorch import lower as _lower
from slmpack.targets.executorch.ops import unsupported_features
from slmpack.targets.executorch.options import ExecuTorchOptions
from slmpack.runtime.adapters.executorch import METHOD, ExecuTorchAdapter, load_program

# Per precision. fp16 rounds every activation to 11 bits: logits move by ~1e-2 relative, so the
# ladder checks it against the reference with a relative bound and no exact-greedy requirement.
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4),
    "fp16": Tolerance(atol=5e-2, rtol=2e-2, min_top1=0.0, greedy_exact=False),
}
# Quantized packages are compared with the plan's fake-quant reference, built as XNNPACK executes
# the plan (``executed_quant``: per-token asymmetric qd8 activations, bf16 int4 group scales), so
# both quantize the same way. What remains is not modelled bit for bit: fp32 rounding order (GEMM
# blocking differs per ISA: AVX2 / AVX-512 / AMX / NEON) and XNNPACK's zero-point nudging can put
# an input one int8 step (its token's range / 255) away, moving that linear's output by the step
# times a row of |W|. This bound (unchanged) is what admits such steps; top-1 stays >= 0.95.
QUANT_TOLERANCE = Tolerance(atol=1e-1, rtol=2e-2, min_top1=0.95, greedy_exact=False)
# A plan whose every tensor is int8 weight-only (f32-qc8w GEMM) or an int8-stored embedding runs
# fp32 math on the plan's own values: held to the fp32 bound against the fake-quant reference.
REQUIRED_METHODS = ("forward", "get_max_seq_len", "get_max_context_len", "use_kv_cache", "enable_dynamic_shape")


class ExecuTorchTarget:
    name = TargetName.EXECUTORCH
    options_type = ExecuTorchOptions
    consumes = Consumes.MODULE        # lower() exports its own prepared module (one dynamic forward)
    cache_update = CacheUpdate.INDEX_COPY

    def layout(self, options: ExecuTorchOptions) -> CacheLayout:
        return CacheLayout.BUFFER

    def tolerance(self, options: ExecuTorchOptions, plan=None) -> Tolerance:
        if plan is not None:
            from slmpack.targets.executorch.quantize import EXACT_ENCODINGS, encodings

            enc = encodings(plan)
            if enc and set(enc.values()) <= EXACT_ENCODINGS:
                return TOLERANCES["fp32"]
            return QUANT_TOLERANCE
        return TOLERANCES.get(options.precision.value, TOLERANCES["fp32"])

    def readback(self, pkg_dir: Path, plan) -> Readback:
        """Find the plan's integers and scales in model.pte's XNNPACK data and compare them."""
        from slmpack.targets.executorch.readback import readback

        return Readback.from_json(readback(Path(pkg_dir), plan))

    def capabilities(self, options: ExecuTorchOptions) -> Capabilities:
        from slmpack.targets.executorch.ops import SUPPORTED_PRECISIONS
        from slmpack.targets.executorch.quantize import capabilities

        return Capabilities(precisions=tuple(p.value for p in SUPPORTED_PRECISIONS), quant=capabilities(options))

    def preflight(self, spec, options: ExecuTorchOptions, plan=None) -> list[Unsupported]:
        return unsupported_features(spec, options, plan)

    def executed_quant(self, options, plan) -> ExecutedQuant:
        from slmpack.targets.executorch.quantize import executed_quant

        return executed_quant(plan)

    def extra_vectors(self, pkg_dir: Path, manifest: dict, runner, tol: Tolerance) -> None:
        return None

    def reference_requests(self, spec, options: ExecuTorchOptions, trace_cfg) -> tuple[ReferenceRequest, ...]:
        """The BundledProgram's cases (model.bpte), when ``bundled_program`` is asked for."""
        from slmpack.targets.executorch.bundle import request

        return (request(spec.vocab_size, trace_cfg.max_prompt),) if options.bundled_program else ()

    def write_reference(self, pkg_dir: Path, options, traces: tuple[ReferenceTrace, ...]) -> tuple[str, ...]:
        from slmpack.targets.executorch.bundle import write_bundle

        pkg_dir = Path(pkg_dir)
        return tuple(write_bundle(pkg_dir / _lower.MODEL_FILE, t, pkg_dir / _lower.BUNDLE_FILE) for t in traces)

    def lower(self, programs, spec, options: ExecuTorchOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
        return _lower.lower(programs, spec, options, out_dir, gen, plan)

    def check(self, pkg_dir: Path, manifest: dict) -> list[str]:
        """Structural check: the program verifies on load, has the runner's methods and the
        forward signature the manifest declares, and its metadata agrees with the manifest."""
        path = pkg_dir / manifest["artifact"]
        try:
            program = load_program(path.read_bytes(), verify=True)
        except Exception as e:  # pybindings raise RuntimeError; a missing file OSError
            return [f"{path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"]
        problems = [f"missing method {m}" for m in REQUIRED_METHODS if m not in program.method_names]
        if problems:
            return problems
        m = manifest["model"]
        meta = program.metadata(METHOD)
        if meta.num_inputs() != 2 or meta.num_outputs() != 1:
            problems.append(f"forward has {meta.num_inputs()} inputs / {meta.num_outputs()} outputs, expected 2 / 1")
        else:
            tok, pos = meta.input_tensor_meta(0).sizes(), meta.input_tensor_meta(1).sizes()
            if tuple(tok) != (1, m["max_prompt"]) or tuple(pos) != (m["max_prompt"],):
                problems.append(f"forward input bounds {tuple(tok)}, {tuple(pos)} differ from max_prompt {m['max_prompt']}")
        for name, want in (("get_max_seq_len", m["max_prompt"]), ("get_max_context_len", m["max_context"])):
            got = program.load_method(name).execute([])[0]
            if int(got) != int(want):
                problems.append(f"{name} = {got}, manifest says {want}")
        from executorch.runtime import Runtime

        if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
            problems.append("XnnpackBackend is not registered in this executorch runtime")
        return problems

    def runner(self, pkg_dir: Path, manifest: dict) -> ExecuTorchAdapter:
        """The runtime kit's adapter: host validation and the device runner run one code path."""
        m = manifest["model"]
        return ExecuTorchAdapter(Path(pkg_dir) / manifest["artifact"], m["max_prompt"], m["max_context"])
