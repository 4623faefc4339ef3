"""Validate and time one package on the machine this runs on (the device runner's job).

``validate(pkg)`` returns the JSON document the device harness judges: the package identity
(``integrity.manifest_identity``, sha256 of the canonical manifest), integrity (every file a
regular file listed with its sha256, nothing extra, no symlink; every file-naming manifest field
an entry of ``files``), then the ladder's ``PACKAGE_ONLY`` steps with the tolerance the target
declares for this package (``tolerance.checked``: a manifest whose ``tolerance`` differs is
refused), greedy tokens vs the package's reference, timings and peak RSS. A package that fails
integrity is never run. Errors are ``SlmpackError``s; ``main`` maps them to exit codes. With
``--require-signature``, ``main`` first checks the package's signature (``signature.check``) and
reads nothing else of a package whose signature is missing or does not verify. An encoder
package (``encoder`` in its manifest) takes the same identity, integrity and signature steps, then
``device_encoder.validate_encoder`` runs its test vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import ladder, safetensors, signature, tolerance
from .adapters import open_runner
from .device_info import RUNNER_VERSION, base_result, checked_files, machine_info, peak_rss_mb, runtime_record
from .encoder_manifest import is_encoder_document
from .errors import BadInputError, ErrorCode, SlmpackError
from .greedy import prefill_all
from .integrity import read_document
from .manifest import Manifest

DECODER_FIELDS = ("prefill_max_abs_diff", "decode_max_abs_diff", "prefill_within_tolerance", "decode_within_tolerance",
                  "prefill_top1_agreement", "decode_top1_agreement", "greedy_ids", "greedy_match", "load_ms",
                  "ttft_ms", "prefill_tok_s", "decode_tok_s")


def validate(pkg: Path, threads: int = 0, max_new_tokens: int = 32) -> dict:
    """The runner's document for a decoder or an encoder package (``device_encoder.py``)."""
    pkg = Path(pkg)
    doc, identity = read_document(pkg)
    if is_encoder_document(doc):
        from .device_encoder import validate_encoder

        return validate_encoder(pkg, doc, identity, threads)
    manifest = Manifest.from_json(doc)  # typed: file fields inside `files`, target known
    result = base_result(pkg, identity, manifest.target.value, DECODER_FIELDS)
    if not checked_files(pkg, manifest, result):  # never execute an artifact the manifest does not describe
        return result
    tol = tolerance.checked(manifest)
    result["tolerance"] = {"atol": tol.atol, "rtol": tol.rtol}
    vectors = safetensors.load(pkg / manifest.test_vectors.file)
    t0 = time.perf_counter()
    runner = open_runner(pkg, manifest, threads)
    result["load_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    result["runtime"] = runtime_record(runner.runtime_name, runner.runtime_version, manifest.runtime.min_version)
    vec = ladder.check_vectors(runner, vectors, tol)
    for key in ("prefill_max_abs_diff", "decode_max_abs_diff", "prefill_within_tolerance",
                "decode_within_tolerance", "prefill_top1_agreement", "decode_top1_agreement"):
        result[key] = vec.get(key)
    eos = manifest.model.eos_token_ids
    prompt = vectors["greedy_prompt_ids"]
    n = min(max_new_tokens, len(vectors["greedy_ids"]), manifest.model.max_context - len(prompt))
    t0 = time.perf_counter()
    token = int(prefill_all(runner, prompt)[-1].argmax())
    t1 = time.perf_counter()
    generated = [token]
    while len(generated) < n and token not in eos:
        token = int(runner.decode(token, len(prompt) + len(generated) - 1).argmax())
        generated.append(token)
    t2 = time.perf_counter()
    ref = [int(t) for t in vectors["greedy_ids"]]
    result.update({"greedy_ids": generated, "greedy_match": generated == ref,
                   "ttft_ms": round((t1 - t0) * 1e3, 3),
                   "prefill_tok_s": round(len(prompt) / max(t1 - t0, 1e-9), 2),
                   "decode_tok_s": round((len(generated) - 1) / (t2 - t1), 2) if len(generated) > 1 else None})
    result["peak_rss_mb"], result["rss_source"] = peak_rss_mb()
    greedy_ok = result["greedy_match"] or not tol.greedy_exact  # lossy arithmetic: recorded, not judged
    result["ok"] = bool(vec["passed"] and greedy_ok and result["runtime"]["version_ok"])
    if not result["ok"]:
        result["error"] = {"code": ErrorCode.E_VALIDATION.value, "message": "device outputs differ from the test vectors"}
    return ladder.rounded(result)


def _check_signature(args) -> signature.SignatureCheck:
    if not args.public_key:
        raise BadInputError("--require-signature needs --public-key", ErrorCode.E_SIGNATURE_KEY)
    pkg = Path(args.package)
    sig = Path(args.signature) if args.signature else pkg.absolute().with_name(pkg.absolute().name + ".sig")
    return signature.check(pkg, sig, Path(args.public_key))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="validate and time one slmpack package on this machine")
    ap.add_argument("package")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", help="also write the JSON document to this file")
    ap.add_argument("--require-signature", action="store_true",
                    help="refuse the package unless its model-signing signature verifies (needs cryptography)")
    ap.add_argument("--signature", help="signature bundle (default: PKG.sig beside the package)")
    ap.add_argument("--public-key", help="PEM public key the signature must verify with")
    ap.add_argument("--et-lib", help="run ExecuTorch programs through this torch-free libslm_et.so "
                    "(device_tests/et_runtime.py) instead of executorch.runtime (sets SLMPACK_ET_LIB)")
    args = ap.parse_args(argv)
    if args.et_lib:
        os.environ["SLMPACK_ET_LIB"] = str(Path(args.et_lib).absolute())
    stdout_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the runtimes print goes to stderr; stdout carries only our JSON
    try:
        signed = _check_signature(args) if args.require_signature else None  # before anything is read
        result = validate(Path(args.package), args.threads, args.max_new_tokens)
        if signed is not None:
            result.update(signature=signed.to_json(), signature_ok=True)
        code = 0 if result["ok"] else 1
    except SlmpackError as exc:
        result = {"ok": False, "error": {"code": exc.code.value, "message": exc.message}, "machine": machine_info()}
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - report any runtime failure as JSON
        result = {"ok": False, "error": {"code": ErrorCode.E_RUNTIME.value,
                                         "message": f"{type(exc).__name__}: {exc}"}, "machine": machine_info()}
        code = 3
    text = json.dumps(result, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.stdout.flush()
    os.dup2(stdout_fd, 1)
    os.write(1, (text + "\n").encode())
    return code


__all__ = ["validate", "main", "machine_info", "RUNNER_VERSION"]
