"""Device commands of the CLI: `slmpack devices`, `slmpack fit`, `slmpack device-test`."""
from __future__ import annotations

import json
from pathlib import Path

from slmpack.errors import BadInputError, ValidationFailed
from slmpack.quiet import stdout


def add_parsers(sub, common) -> None:
    def finish(p) -> None:  # every device command reads the profiles, plus the common options
        p.add_argument("--profiles", type=Path, action="append", default=[],
                       help="extra folder of profile .toml files")
        common(p)

    p = sub.add_parser("devices", help="list device profiles (built in + --profiles DIR + $SLMPACK_DEVICE_PROFILES)")
    finish(p)

    p = sub.add_parser("fit", help="estimate peak memory and decode speed of a model or package on a device",
                       description="Estimate peak memory (weights at the given precision + KV cache at --context + "
                       "activations + runtime overhead) and a decode tok/s upper bound from memory bandwidth. "
                       "Encoders (BERT / DistilBERT / sentence-transformers): weights + activations of one "
                       "forward pass at --batch x --context tokens + runtime overhead. "
                       "Exit code 2 with the numbers when it does not fit.")
    p.add_argument("path", type=Path, nargs="?", default=None,
                   help="HF model directory or slmpack package (default: the bundled demo model)")
    p.add_argument("--device", "-d", required=True, help="device profile name (see `slmpack devices`)")
    p.add_argument("--context", type=int, default=None,
                   help="context length in tokens (default: model max); encoders: sequence length")
    p.add_argument("--batch", type=int, default=None, help="encoders: rows of one forward pass (default 1)")
    p.add_argument("--bits", type=float, default=None, help="bits per weight for a model dir (default 16)")
    finish(p)

    p = sub.add_parser("device-test", help="run packages on devices and validate there (matrix mode)",
                       description="Push each package + the standalone on-device runner to each device, run the "
                       "test vectors and a greedy generation there, compare with the reference on the host, and "
                       "write report.json / report.md / report.html.")
    p.add_argument("packages", type=Path, nargs="+", help="package directories")
    p.add_argument("--device", "-d", action="append", required=True,
                   help="device profile (repeat for a matrix), e.g. rpi5-emulated, host")
    p.add_argument("--transport", choices=("local", "qemu", "ssh", "adb", "xcode"), default=None,
                   help="override each profile's default transport")
    p.add_argument("--host", default=None, help="ssh: host name or address")
    p.add_argument("--port", type=int, default=None, help="ssh: port")
    p.add_argument("--user", default=None, help="ssh: user")
    p.add_argument("--key", type=Path, default=None, help="ssh: private key file")
    p.add_argument("--serial", default=None, help="adb: device serial")
    p.add_argument("--report", type=Path, default=Path("device-report"), help="report folder (default ./device-report)")
    p.add_argument("--require-signature", action="store_true",
                   help="the device refuses a package unless its signature (PKG.sig beside it, from `slmpack sign`) "
                   "verifies with --public-key (the device needs the cryptography package)")
    p.add_argument("--public-key", type=Path, default=None, help="PEM public key for --require-signature")
    finish(p)


def cmd_devices(args) -> int:
    from slmpack.device_tests import list_profiles

    profiles = list_profiles(tuple(args.profiles))
    rows = [{"name": p.name, "display_name": p.display_name, "arch": p.arch, "os": p.os, "emulated": p.emulated,
             "ram_available_mb": p.memory.app_available_mb, "bandwidth_gbs": p.memory.bandwidth_gbs,
             "formats": [f.format for f in p.formats], "transport": p.default_transport} for p in profiles]
    if args.json:
        stdout().write(json.dumps(rows, indent=2) + "\n")
        return 0
    for r in rows:
        print(f"{r['name']:<16} {r['display_name']:<34} {r['arch']:<8} {r['ram_available_mb']:>6} MB "
              f"{r['bandwidth_gbs']:>6} GB/s  {','.join(r['formats']):<32} via {r['transport']}", file=stdout())
    return 0


def cmd_fit(args) -> int:
    from slmpack.device_tests import FitReport, fit_check

    from slmpack.bundled import demo_model_dir

    report = fit_check(args.path or demo_model_dir(), args.device, args.context, args.bits, strict=False,
                       profile_dirs=tuple(args.profiles), batch=args.batch)
    if args.json:
        stdout().write(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    else:
        print(("fits: " if report.fits else "does NOT fit: ") + report.message(), file=stdout())
    if not args.json and isinstance(report, FitReport):  # decoders: a memory-bound decode speed
        print(f"decode upper bound {report.decode_tok_s_upper} tok/s ({report.bandwidth_gbs} GB/s, "
              f"{report.bytes_per_token / 1e6:.1f} MB read per token)", file=stdout())
    report.raise_if_too_big()
    return 0


def cmd_device_test(args) -> int:
    from slmpack.device_tests import run_device_test

    opts = {k: v for k, v in (("host", args.host), ("port", args.port), ("user", args.user),
                              ("key", args.key), ("serial", args.serial)) if v is not None}
    if args.require_signature and args.public_key is None:
        raise BadInputError("device-test --require-signature needs --public-key", "E_SIGNATURE_KEY")
    report = run_device_test(args.packages, args.device, args.transport, out_dir=args.report,
                             profile_dirs=tuple(args.profiles), transport_options=opts or None,
                             signature_key=args.public_key if args.require_signature else None)
    if args.json:
        stdout().write(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    else:
        print(report.to_markdown(), file=stdout())
        print(f"report written to {args.report}/report.{{json,md,html}}", file=stdout())
    if not report.ok:
        raise ValidationFailed(f"device test failed: {report.counts()}", "E_DEVICE_VALIDATION")
    return 0


COMMANDS = {"devices": cmd_devices, "fit": cmd_fit, "device-test": cmd_device_test}


