"""Build and install mtlkit.

The native extension ``mtlkit._C`` is built from ``csrc/`` with
``torch.utils.cpp_extension`` (ninja):

* C++ sources (``csrc/**/*.cpp`` except ``csrc/cuda/*.cpp``) always;
* CUDA sources (``csrc/cuda/*.cu`` and the torch-facing ``csrc/cuda/*.cpp``)
  when the installed torch has CUDA and nvcc is found, or when
  ``MTLKIT_FORCE_CUDA=1``;
* nothing at all with ``MTLKIT_NO_EXT=1`` (the pure-PyTorch reference ops are
  then used).

Install with ``pip install --no-build-isolation -e .[dev]`` so the extension
is compiled against the torch already installed.
"""

import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _sources(pattern: str) -> list:
    return sorted(
        os.path.relpath(p, ROOT)
        for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
    )


def native_extensions():
    """Return (ext_modules, cmdclass) for ``mtlkit._C``, or empty when skipped."""
    if _flag("MTLKIT_NO_EXT"):
        return [], {}
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
    )

    cpp_sources = [
        s for s in _sources("csrc/**/*.cpp") if not s.startswith(os.path.join("csrc", "cuda"))
    ]
    cuda_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    if not cpp_sources:
        return [], {}
    with_cuda = _flag("MTLKIT_FORCE_CUDA") or (
        torch.version.cuda is not None and CUDA_HOME is not None and bool(cuda_sources)
    )
    define_macros = [("TORCH_EXTENSION_NAME", "_C"), ("MTLKIT_PYTHON_MODULE", None)]
    # No FMA contraction: the kernels must round exactly like the PyTorch reference.
    extra_compile_args = {"cxx": ["-O3", "-ffp-contract=off", "-fno-trapping-math"]}  # -std: torch's default (C++17 or 20)
    if os.name != "nt":
        extra_compile_args["cxx"].append("-fopenmp")
    extra_link_args = ["-fopenmp"] if os.name != "nt" else []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        define_macros.append(("MTLKIT_WITH_CUDA", None))
        # pip-installed CUDA headers (cusparse.h, cublas_v2.h, ...) that ATen/cuda
        # includes but a minimal toolkit in CUDA_HOME may lack.
        site = os.path.dirname(os.path.dirname(torch.__file__))
        include_dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr", "--fmad=false"]
        ext = CUDAExtension(
            "mtlkit._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    else:
        ext = CppExtension(
            "mtlkit._C",
            cpp_sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args["cxx"],
            extra_link_args=extra_link_args,
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = native_extensions()


def version() -> str:
    """The one home of the version: ``mtlkit/version.py`` (read, not imported)."""
    scope: dict = {}
    with open(os.path.join(ROOT, "mtlkit", "version.py"), encoding="utf-8") as handle:
        exec(handle.read(), scope)  # noqa: S102 - our own one-line module
    return scope["__version__"]


setup(
    name="mtlkit",
    version=version(),
    description="Multi-task learning for visual detection: ROCK, SSD and a plugin system",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    if os.path.exists(os.path.join(ROOT, "README.md"))
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mtlkit", "mtlkit.*"])
    + ["mtlkit_plugins", "mtlkit_plugins.gradient_weightings"],
    package_dir={"mtlkit_plugins": "plugins"},
    package_data={"mtlkit": ["py.typed", "weights/*.pt", "weights/*.md"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # Bounds are claims: a lower bound only where the suite passed on it, an
    # upper bound only where a newer release is known to break (none is).
    install_requires=[
        "torch>=2.13",  # the suite: 2.13.0 (CPU build) and 2.14.1 (CUDA build, on the CPU)
        "numpy",
        "pluggy>=1.3",  # the suite: 1.3.0 (with pytest 8.0.2) and 1.7.0
        "pyyaml",
        "h5py",
        "scipy",
        "pillow",
        "tqdm",
        "matplotlib",
        "trimesh",
        "embreex",
    ],
    extras_require={
        # TensorBoard events beside metrics.jsonl (train.tensorboard, on by default)
        "tensorboard": ["tensorboard"],
        "dev": ["pytest", "pytest-benchmark", "hypothesis", "pycocotools", "ninja", "pybind11",
                "tensorboard"],
    },
    entry_points={
        "console_scripts": ["mtlkit = mtlkit.cli:main"],
        # The built-ins are registered exactly like a third-party plugin package.
        "mtlkit": [
            "backbones = mtlkit_plugins.backbones",
            "detection = mtlkit_plugins.detection",
            "auxiliary_tasks = mtlkit_plugins.auxiliary_tasks",
            "fusions = mtlkit_plugins.fusions",
            "datasets = mtlkit_plugins.datasets",
            "weightings = mtlkit_plugins.weightings",
            "gradient_weightings = mtlkit_plugins.gradient_weightings",
        ],
    },
)
