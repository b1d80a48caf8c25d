"""Packaging for tensorboard-plugin-cam: the writer (`writer_ext`), the
TensorBoard plugin (`tensorboard_plugin_cam`) and its frontend (`frontend/`,
installed as `tensorboard_plugin_cam/frontend`)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="tensorboard-plugin-cam",
    version="0.1.0",
    description=(
        "Class activation maps (Grad-CAM and family) and activations from PyTorch, "
        "in their own TensorBoard tab"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # every package of the two, found (a new subpackage cannot be left out), and the frontend as package data
    packages=[*find_packages(include=["writer_ext", "writer_ext.*", "tensorboard_plugin_cam",
                                      "tensorboard_plugin_cam.*"]), "tensorboard_plugin_cam.frontend"],
    package_dir={"tensorboard_plugin_cam.frontend": "frontend"},
    package_data={"tensorboard_plugin_cam.frontend": ["*.js", "*.css", "cam/*.js"]},
    install_requires=[
        # The range scripts/compat.sh and the test suite have run against. TensorBoard 2.20 and older
        # need setuptools<82, 2.15 and 2.16 also numpy<2 and protobuf<5: README, "Versions".
        "tensorboard>=2.15,<2.22",
        "tensorboard-data-server>=0.7,<0.8",
        "torch>=2.1",
        "torchvision>=0.16",
        "werkzeug>=2.0",
        "protobuf>=3.19.6",
        "numpy>=1.22",
        "Pillow>=9.0",
        "tqdm>=4.60",  # writer_ext.evaluate's progress bar
        # event records framed by compiled code (wheels for every platform and Python we support); the
        # writer falls back to TensorBoard's pure-Python CRC if it fails to import (summaries/fastcrc.py)
        "crc32c>=2.3",
    ],
    extras_require={
        # kept so that `pip install ".[fast]"` still works: crc32c is now a default requirement
        "fast": [],
        # the ROAD score (metrics "road_*", opt-in): its noisy linear imputation solves sparse systems
        "road": ["scipy>=1.7"],
        # `tensorboard-cam eval --model timm:NAME`
        "timm": ["timm>=0.9"],
        # writer_ext.integrations.lightning (and .pytorch_lightning) and writer_ext.integrations.transformers
        "lightning": ["lightning>=2.0"],
        "transformers": ["transformers>=4.40", "accelerate>=0.26"],
        "test": [
            "build>=1.0",  # tests/writer/test_packaging.py
            "pytest>=7",
            "playwright>=1.40",
            "ruff>=0.5",
            "hypothesis>=6",
            "moto[server]>=5",
            "boto3>=1.26",
            "scikit-learn>=1.0",  # the demo's --dataset digits
            "scipy>=1.7",  # ROAD (the [road] extra); the reference Spearman correlation (test_sanity.py)
            "torchray>=1.0",  # the pointing game as the benchmarks play it (tests/writer/test_localization.py)
            # the libraries our maps are compared with (tests/writer/test_agreement.py)
            "grad-cam>=1.5",
            "torchcam>=0.4",
            # the framework callbacks (tests/writer/test_integrations.py)
            "lightning>=2.0",
            "transformers>=4.40",
            "accelerate>=0.26",
            # model families for target_layer=None and the target kinds
            # (tests/writer/test_target_kinds.py, test_model_families.py; random weights)
            "timm>=1.0",
        ],
        # bench/ also times Captum beside pytorch-grad-cam and torchcam
        # bench/bench_sanity.py compares sanity_check with Quantus's MPRT (base install, no TensorFlow; brings scipy)
        "bench": ["captum>=0.7", "grad-cam>=1.5", "torchcam>=0.4", "scikit-learn>=1.0", "quantus>=0.6,<0.7"],
    },
    entry_points={
        "tensorboard_plugins": ["cam = tensorboard_plugin_cam.plugin:CamLoader"],
        "console_scripts": ["tensorboard-cam-demo = writer_ext.demo:main", "tensorboard-cam = writer_ext.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        *(f"Programming Language :: Python :: 3.{minor}" for minor in range(9, 14)),
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
