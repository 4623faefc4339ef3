"""The `slmpack` command line.

Exit codes: 0 ok, 1 validation failed, 2 bad input or usage, 3 toolchain failure.
Every command accepts --json (one JSON document on stdout) for build systems.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
from pathlib import Path

from slmpack import quiet
from slmpack.errors import BadInputError, SlmpackError, ToolchainError

TARGET_CHOICES = ("onnx", "executorch", "tflite", "coreml", "all")

EPILOG = """exit codes: 0 ok, 1 validation failed, 2 bad input or usage, 3 toolchain failure.
Errors print one line `error[CODE]: message` on stderr (and a JSON object on stdout with --json)."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (for build systems)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for toolchain failures (implies --verbose)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="stream third-party output (converter logs, warnings) instead of writing it to build.log")
    p.add_argument("--log", type=Path, default=None,
                   help="where third-party output goes (default: build.log beside the package(s))")


def _quant_arguments(g) -> None:
    g.add_argument("--quant", metavar="RECIPE", default=None,
                   help="preset int8 | int4 | 8da4w | w8a8, or a recipe file (.toml/.json), or from-gguf (a .gguf "
                   "model's own integers: Q8_0 -> int8 g32, Q4_0 -> int4 symmetric g32, float types stay float; "
                   "other block types are refused); default: fp32")
    g.add_argument("--calib-data", type=Path, default=None, metavar="PATH",
                   help="calibration text: a file, a directory of *.txt, or .jsonl (default: bundled calibration.txt)")
    g.add_argument("--calib-format", choices=("text", "jsonl", "directory"), default=None,
                   help="format of --calib-data (default: from the path)")
    g.add_argument("--calib-text-field", default="text", help="JSONL field holding the text (default: text)")
    g.add_argument("--calib-windows", type=int, default=32, help="calibration windows drawn (default: 32)")
    g.add_argument("--calib-window-tokens", type=int, default=256,
                   help="tokens per calibration window, at most --max-context (default: 256)")
    g.add_argument("--calib-seed", type=int, default=0, help="window sampling seed (default: 0)")
    g.add_argument("--algorithm", choices=("rtn", "gptq", "awq"), default=None,
                   help="weight algorithm for every linear rule of the recipe (embeddings stay RTN)")
    g.add_argument("--max-ppl-increase", default=None, metavar="PCT",
                   help="mixed precision: smallest per-layer int4/int8/float plan within this perplexity "
                   "increase over fp32 on calibration text, e.g. 2%%")
    g.add_argument("--max-ppl-loss", type=float, default=10.0, metavar="PCT",
                   help="accuracy gate: fail (exit 1, E_ACCURACY_GATE) a quantized export whose held-out "
                   "perplexity exceeds fp32's by more than PCT percent (default: 10)")
    g.add_argument("--max-size", default=None, metavar="SIZE",
                   help="mixed precision: most accurate per-layer plan whose artifact fits, e.g. 8MB or 6MiB")
    g.add_argument("--quant-plan", type=Path, default=None, metavar="DIR",
                   help="reuse the calibrated plan of an earlier export (its package folder, whose plan is the "
                   "sidecar PKG.plan beside it; the sidecar itself; or a folder with quant_plan.json + "
                   "quant_plan.safetensors): no calibration, the same integers in every target; refused if it "
                   "was calibrated on another checkpoint")


def quant_config_from_args(args):
    from slmpack.quantize_config import QuantConfig

    return QuantConfig(recipe=args.quant, calib_data=args.calib_data, calib_format=args.calib_format,
                       calib_text_field=args.calib_text_field, calib_windows=args.calib_windows,
                       calib_window_tokens=args.calib_window_tokens, calib_seed=args.calib_seed,
                       algorithm=args.algorithm, max_ppl_increase_pct=args.max_ppl_increase,
                       max_size_bytes=args.max_size, plan_from=args.quant_plan)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="slmpack", description="Export trained small language models to validated on-device packages "
        "(ONNX Runtime, ExecuTorch, Core ML, LiteRT).", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("export", help="export a model to one or all targets, then validate",
                       description="Trace MODEL_DIR (a local Hugging Face directory, or a llama.cpp .gguf file: "
                       "llama/qwen2/qwen3, tensor types F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K, dequantized; default: "
                       "the bundled demo model), lower it for the target, write a package atomically and run the "
                       "validation ladder.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", nargs="?", type=Path,
                   help="HF-format model directory or a .gguf file (default: bundled demo)")
    p.add_argument("--target", "-t", default="onnx", choices=TARGET_CHOICES,
                   help="target runtime; 'all' writes OUT/<target>/ for every available target (default: onnx)")
    p.add_argument("--out", "-o", type=Path, default=None, help="output package directory (default: ./slmpack-out/<model>[/<target>])")
    p.add_argument("--max-context", type=int, default=None,
                   help="KV-cache length in tokens (default: min(4096, the model's max_position_embeddings), "
                        "lowered to what --device fits)")
    p.add_argument("--max-prompt", type=int, default=128,
                   help="longest prefill chunk; longer prompts prefill in chunks (default: 128)")
    p.add_argument("--eval-text", type=Path, default=None,
                   help="held-out text for the validation ladder (default: bundled English held-out text)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept *.bin/*.pt checkpoints (read with torch.load(weights_only=True))")
    p.add_argument("--no-validate", action="store_true", help="skip the validation ladder")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="follow symlinks inside MODEL_DIR (the resolved path must still be inside it)")
    p.add_argument("--keep-failed", type=Path, default=None, metavar="DIR",
                   help="move a package that fails validation to DIR (default: remove it; nothing stays at --out)")
    p.add_argument("--adapter", type=Path, default=None, metavar="DIR",
                   help="a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) merged into "
                        "MODEL_DIR's weights before calibration; rsLoRA and any rank; DoRA is refused")
    p.add_argument("--adapter-mode", choices=("merged", "separate"), default="merged",
                   help="merged (default, every target): the adapter is folded into the weights; separate: "
                        "the base plus a swappable adapter file (onnx: adapter.onnx_adapter for onnxruntime-genai "
                        "Adapters / onnxruntime LoraAdapter)")
    p.add_argument("--device", default=None,
                   help="refuse up front (exit 2, with the numbers) if the package cannot fit this device profile")
    _quant_arguments(p.add_argument_group("quantization (calibrated QuantPlan, encoded natively by the target)"))
    _common(p)
    from slmpack.targets.options import add_target_arguments

    add_target_arguments(p)

    p = sub.add_parser("validate", help="re-run structural, test-vector and greedy checks on a package")
    p.add_argument("package", type=Path)
    _common(p)

    p = sub.add_parser("verify", help="re-hash a package; name changed, missing or extra files")
    p.add_argument("package", type=Path)
    p.add_argument("--signature", nargs="?", const="", default=None, metavar="SIG",
                   help="also check the package's signature (default file: PKG.sig beside it)")
    p.add_argument("--public-key", type=Path, default=None, help="PEM public key for --signature")
    _common(p)

    p = sub.add_parser("sign", help="sign every file of a package (manifest included) with a local key")
    p.add_argument("package", type=Path)
    p.add_argument("--private-key", type=Path, required=True, help="PEM private key (EC P-256/P-384)")
    p.add_argument("--signature", type=Path, default=None, help="signature file (default: PKG.sig beside it)")
    _common(p)

    p = sub.add_parser("inspect", help="show what was understood from a checkpoint")
    p.add_argument("model_dir", nargs="?", type=Path,
                   help="HF-format model directory or a .gguf file (default: bundled demo)")
    _common(p)

    from slmpack.cli_devices import add_parsers

    add_parsers(sub, _common)
    from slmpack.build.command import add_parser as add_build_parser

    add_build_parser(sub, _common)
    return ap


def _print_json(obj) -> None:
    quiet.stdout().write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def cmd_export(args) -> int:
    from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
    from slmpack.exporter import pipeline
    from slmpack.exporter.pipeline import require_passed
    from slmpack.progress import Progress
    from slmpack.summary import export_table
    from slmpack.targets import registry
    from slmpack.targets.options import options_for

    cfg = ExportConfig(trace=TraceConfig(max_context=args.max_context, max_prompt=args.max_prompt),
                       validation=ValidationConfig(max_ppl_loss=args.max_ppl_loss),
                       quant=quant_config_from_args(args),
                       validate=not args.no_validate, allow_pickle=args.allow_pickle, force=args.force,
                       follow_symlinks=args.follow_symlinks, keep_failed=args.keep_failed, adapter=args.adapter,
                       adapter_mode=args.adapter_mode)
    targets = registry.available() if args.target == "all" else [args.target]
    base = _export_base(args)
    outs = {t: (base / t if args.target == "all" or args.out is None else base) for t in targets}
    if args.target == "all" or args.out is None:  # our own folder structure: create it
        for o in outs.values():
            o.parent.mkdir(parents=True, exist_ok=True)
    if args.device:
        from slmpack.device_tests import fit_check
        from slmpack.device_tests.fit import device_context
        from slmpack.exporter.pipeline import resolve_model_dir

        bits = {"fp32": 32, "fp16": 16, "bf16": 16}.get(cfg.precision.value, 32)
        from slmpack.exporter.gguf.reader import is_gguf

        model_dir = args.model_dir if is_gguf(args.model_dir) else resolve_model_dir(args.model_dir)
        context = args.max_context or device_context(model_dir, args.device, bits)   # what the device fits
        fit_check(model_dir, args.device, context, bits)
        cfg = dataclasses.replace(cfg, trace=TraceConfig(max_context=context, max_prompt=min(args.max_prompt, context)))
    progress = Progress(enabled=not args.json, file=quiet.stderr())
    if args.target == "all" and not args.json:
        for t, extra in registry.not_installed().items():
            print(f"note: {t} skipped, its toolchain is not installed: pip install 'slmpack[{extra}]'",
                  file=quiet.stderr())
    st = pipeline.export_many(args.model_dir, [(t, outs[t], options_for(t, args)) for t in targets], cfg, progress,
                              args.eval_text, keep_going=args.target == "all")   # calibrates once for all targets
    progress.close()
    pkgs, errors = st.packages, st.errors
    if args.json:
        _print_json({"packages": [{"path": str(p.path), "target": p.target, "validation": p.validation}
                                  for p in pkgs],
                     "errors": [{"target": t, **e.to_json()} for t, e in errors]})
    else:
        export_table(pkgs, errors)
    for p in pkgs:
        require_passed(p)
    if errors:
        raise max((e for _, e in errors), key=lambda e: e.exit_code)
    return 0


def cmd_validate(args) -> int:
    from slmpack import api

    res = api.validate(args.package)
    if args.json:
        _print_json(res)
    else:
        v, rb = res["vectors"], ("" if res["readback"] == "not a quantized package" else f", plan read-back {res['readback']}")
        print(f"{res['package']} [{res['target']}]: structural {'ok' if res['structural']['passed'] else 'FAIL'}, "
              f"vectors max|diff| {max(v['prefill_max_abs_diff'], v['decode_max_abs_diff']):.2e} "
              f"(bound {v['bound']:.1e}), greedy {'match' if res['greedy']['match'] else 'MISMATCH'}{rb} "
              f"-> {'PASSED' if res['passed'] else 'FAILED'}", file=quiet.stdout())
    if not res["passed"]:
        from slmpack.errors import ValidationFailed

        raise ValidationFailed(f"{args.package}: validation failed", "E_VALIDATION", details=res)
    return 0


def cmd_verify(args) -> int:
    from slmpack import api

    res = api.verify(args.package)
    if args.signature is not None:
        from slmpack.signing import verify_signature

        if args.public_key is None:
            raise BadInputError("verify --signature needs --public-key", "E_SIGNATURE_KEY")
        res.update(verify_signature(args.package, args.public_key, Path(args.signature) if args.signature else None))
    if args.json:
        _print_json(res)
    else:
        sig = ", signature verified" if res.get("signature_ok") else ""
        print(f"{res['package']}: {res['files']} files verified, all hashes match{sig}\n"
              f"identity: {res['identity']}", file=quiet.stdout())
    return 0


def cmd_sign(args) -> int:
    from slmpack.signing import sign

    res = sign(args.package, args.private_key, args.signature)
    if args.json:
        _print_json(res)
    else:
        print(f"{res['package']}: signed -> {res['signature']}", file=quiet.stdout())
    return 0


def cmd_inspect(args) -> int:
    from slmpack import api

    res = api.inspect(args.model_dir)
    if args.json:
        _print_json(res)
    else:
        width = max(len(k) for k in res)
        for k, v in res.items():
            print(f"{k:<{width}}  {v}", file=quiet.stdout())
    return 0


def _commands() -> dict:
    from slmpack import cli_devices
    from slmpack.build.command import cmd_build

    return {"build": cmd_build, "export": cmd_export, "validate": cmd_validate, "verify": cmd_verify, "sign": cmd_sign, "inspect": cmd_inspect,
            **cli_devices.COMMANDS}


def _export_base(args) -> Path:
    return args.out or Path("slmpack-out") / (args.model_dir.name if args.model_dir else "demo_model")


def log_path(args) -> tuple[Path, bool]:
    """Where this command's third-party output goes, and whether it is a temporary file."""
    if args.log is not None:
        return args.log, False
    if args.command == "export":
        base = _export_base(args)
        return (base / "build.log" if args.target == "all" or args.out is None
                else base.absolute().parent / "build.log"), False
    if args.command == "validate":
        return args.package.absolute().parent / "build.log", False
    if args.command == "device-test":
        return args.report / "build.log", False
    if args.command == "build":
        from slmpack.build.command import output_root

        return output_root(args) / "build.log", False
    return _temp_log(), True


def _temp_log() -> Path:
    import os
    import tempfile

    fd, name = tempfile.mkstemp(prefix="slmpack-", suffix=".log")
    os.close(fd)
    return Path(name)


def _settle_log(log: Path, final: Path) -> None:
    """Move the run's log beside its output once the run produced one; a bad input leaves no trace
    there (the log stays in the temp dir, and the failure message names it)."""
    import shutil

    try:
        if final.parent.is_dir() and not final.is_symlink():
            shutil.move(str(log), str(final))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose or args.debug
    final, temporary = log_path(args)
    log = final if temporary else _temp_log()  # written beside the output only when there is one
    if not verbose:
        quiet.quiet_env()
    from slmpack.staging import install_signal_handlers, interrupted_error

    if threading.current_thread() is threading.main_thread():
        install_signal_handlers()  # SIGTERM/SIGINT unwind (staging removed), exit 143/130
    ok = produced = False
    try:
        with quiet.captured(log, verbose):
            if not verbose and args.command != "build":  # build: only its workers import the toolchain
                quiet.quiet_third_party()
            rc = _commands()[args.command](args)
        ok = True
        return rc
    except SlmpackError as e:
        produced = e.exit_code == 1  # a package that failed validation (kept or removed): its log matters
        return _fail(args, e, None if verbose else log)
    except KeyboardInterrupt as e:
        return _fail(args, interrupted_error(e), None if verbose else log)
    except Exception as e:  # a converter/runtime bug we did not classify: one line, exit 3
        if args.debug:
            raise
        return _fail(args, ToolchainError(f"internal toolchain failure: {type(e).__name__}: "
                                          f"{str(e).splitlines()[0] if str(e) else ''} (rerun with --debug)",
                                          "E_INTERNAL"), log)
    finally:
        if temporary and (ok or verbose):
            log.unlink(missing_ok=True)
        elif not temporary and (ok or produced):
            _settle_log(log, final)
        elif verbose:
            log.unlink(missing_ok=True)


def _fail(args, e: SlmpackError, log: Path | None = None) -> int:
    if getattr(args, "json", False):
        _print_json(e.to_json())
    print(f"error[{e.code}]: {e}", file=sys.stderr)
    # a bad input (exit 2) is ours alone: the third-party log's tail only helps for failed validation
    # or a toolchain failure
    lines = quiet.tail(log) if log is not None and e.exit_code != 2 else []
    if lines:
        print(f"last {len(lines)} lines of {log}:", file=sys.stderr)
        for line in lines:
            print(f"  | {line}", file=sys.stderr)
    if getattr(args, "debug", False) and e.__cause__ is not None:
        import traceback

        traceback.print_exception(e.__cause__, file=sys.stderr)
    return e.exit_code


def entry() -> None:
    """The console script: ``main``, then, unless ``--verbose`` / ``--debug``, fd 2 points at
    /dev/null while the interpreter exits. Native libraries print from their static destructors
    after our last line (LiteRT: "INFO: [accelerator_registry.cc:43] DestroyAccelerator"), when
    no log capture is active any more; our own output is complete by then."""
    rc = main()
    if not {"--verbose", "--debug"} & set(sys.argv[1:]):
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
