"""A numpy reference interpreter for the Core ML (MIL) programs slmpack emits.

Core ML itself only runs on Apple platforms; this interpreter lets the validation ladder run an
``.mlpackage`` on Linux. It reads the package the way Core ML does (``Manifest.json`` ->
``model.mlmodel`` (Model.proto / MIL.proto) -> ``weights/weight.bin`` (MIL blob storage v2)) and
executes the program op by op:

* every op output is stored in the dtype the program declares for it, so a program that computes
  in fp16 is rounded to fp16 at exactly the points where Core ML holds fp16 tensors (inside one op
  the arithmetic is fp32, as GPU/ANE kernels accumulate);
* states (iOS 18 ``read_state`` / ``write_state``) are held in their declared dtype (fp16);
* constexpr ops (``constexpr_affine_dequantize``, ``constexpr_blockwise_shift_scale``,
  ``constexpr_lut_to_dense``) are decompressed once, at load;
* an op without an implementation raises :class:`UnsupportedOpError` naming it, before anything
  runs; a declared output whose shape or rank disagrees with what an op produced raises
  :class:`MILRuntimeError`. Nothing is skipped silently.
"""
from .errors import MILFormatError, MILRuntimeError, UnsupportedOpError
from .interpreter import Interpreter
from .program import Program, load_mlpackage, load_model_spec

__all__ = ["Interpreter", "Program", "load_mlpackage", "load_model_spec", "MILFormatError", "MILRuntimeError",
           "UnsupportedOpError"]
