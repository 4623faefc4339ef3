"""Maps the repository's top-level folders onto the single import namespace ``slmpack.*``.

pyproject.toml holds all metadata; this file only computes the package list, because the
layout (exporter/, calibration/, targets/, device_tests/ at the top level) differs from the
import names (slmpack.exporter, ...), and setuptools' declarative config cannot express that
mapping for nested packages without listing each one by hand.
"""
from setuptools import find_packages, setup

ROOTS = {
    "slmpack": "slmpack",
    "slmpack.exporter": "exporter",
    "slmpack.calibration": "calibration",
    "slmpack.targets": "targets",
    "slmpack.device_tests": "device_tests",
}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    packages.append(name)
    package_dir[name] = folder
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

packages += ["slmpack.demo_model", "slmpack.demo_data"]  # data folders (package-data in pyproject.toml)
setup(packages=packages, package_dir=package_dir)
