"""Quiet by default: the terminal holds only our lines; third-party output is in build.log beside
the packages (never inside them)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from slmpack.package import verify
from slmpack.quiet import tail
from tests.tiny_models import write_tiny_model

TARGET = r"(onnx|executorch|tflite|coreml)"
OUR_LINES = [
    re.compile(rf"^(\[{TARGET}\] )?[\w ()+.,/·-]+ \d+\.\ds$"),          # a finished stage
    re.compile(r"^note: \w+ skipped, its toolchain is not installed: pip install 'slmpack\[\w+\]'$"),
    re.compile(r"^\s*slmpack export\s*$"),                                  # table title
    re.compile(r"^\s*quantized packages.*$"),                               # quant table title
    re.compile(r"^[┏┃┡│└┗┠┣]"),                                             # table rows and rules
    re.compile(rf"^{TARGET}: (error\[E_[A-Z_]+\]: .+|[\w -]+: .+)$"),        # per-target summary / error
]


FD_SCRIPT = """
import os, sys, warnings
from pathlib import Path
from slmpack.quiet import captured
with captured(Path(sys.argv[1])) as term:
    os.write(1, b"native stdout line\\n")
    os.write(2, b"native stderr line\\n")
    print("python print", flush=True)
    warnings.warn("a third-party warning")
    print("ours", file=term.err, flush=True)
    print("our result", file=term.out, flush=True)
"""


def test_fd_level_output_goes_to_the_log(tmp_path):
    log = tmp_path / "build.log"
    p = subprocess.run([sys.executable, "-c", FD_SCRIPT, str(log)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "our result\n" and p.stderr == "ours\n"
    text = log.read_text()
    for s in ("native stdout line", "native stderr line", "python print", "a third-party warning"):
        assert s in text
    assert any("a third-party warning" in ln for ln in tail(log, 3))


def test_failure_prints_error_and_log_tail(tmp_path):
    model = write_tiny_model(tmp_path / "m", "llama", hidden=16, heads=2, vocab=64, max_pos=64)
    p = subprocess.run([sys.executable, "-m", "slmpack.cli", "export", str(model), "--target", "onnx",
                        "--max-context", "999", "--out", str(tmp_path / "pkg")], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert lines[0] == "preflight failed 0.0s" or lines[0].startswith("preflight failed ")
    assert lines[1].startswith("error[E_CONFIG]: --max-context 999 exceeds")
    assert all(ln.startswith(("last ", "  | ")) for ln in lines[2:]), lines  # the build.log tail, if any
    assert not (tmp_path / "pkg").exists()


@pytest.mark.slow
def test_export_all_prints_only_our_lines(tmp_path):
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "slmpack.cli", "export", "--target", "all", "--out", str(out)],
                       capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in (p.stdout + "\n" + p.stderr).splitlines() if ln.strip()]
    foreign = [ln for ln in lines if not any(r.match(ln) for r in OUR_LINES)]
    assert not foreign, foreign[:20]
    assert sum(bool(OUR_LINES[0].match(ln)) for ln in lines) >= 4 * 5   # stages of every target
    assert (out / "build.log").is_file() and (out / "build.log").stat().st_size > 0
    for t in ("onnx", "executorch", "tflite", "coreml"):
        assert not (out / t / "build.log").exists()
        verify(out / t)


EXIT_NOISE = """
import atexit, os, sys
from slmpack import cli
atexit.register(lambda: os.write(2, b"INFO: [accelerator_registry.cc:43] DestroyAccelerator\\n"))
sys.argv = ["slmpack", *sys.argv[1:]]
cli.entry()
"""


@pytest.mark.parametrize("flag", [None, "--verbose"])
def test_native_output_at_interpreter_exit_stays_off_the_terminal(flag):
    """What native libraries print while the interpreter exits (after our last line, outside any
    capture) is dropped unless --verbose; our own output is unchanged."""
    p = subprocess.run([sys.executable, "-c", EXIT_NOISE, "devices", *([flag] if flag else [])],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "rpi5-emulated" in p.stdout
    assert ("DestroyAccelerator" in p.stderr) is (flag == "--verbose"), p.stderr
