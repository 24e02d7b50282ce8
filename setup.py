"""torchreid-privacy: privacy-preserving person re-identification as torchreid plugins."""
import re

from setuptools import setup

# the one version: torchreid_privacy.__version__ (read as text: building must not import torch)
with open("torchreid_privacy/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

# what a package index shows: short, with absolute links (the README's relative links lead nowhere there)
LONG_DESCRIPTION = """# torchreid-privacy

Train any [torchreid](https://github.com/KaiyangZhou/deep-person-reid) ReID backbone
identity-invariant on raw pedestrian images and on their reversibly anonymized versions, after
Zhang, Ye & Yang, [Learnable Privacy-Preserving Anonymization for Pedestrian
Images](https://arxiv.org/abs/2207.11677) (ACM MM 2022). A `privacy:` section in a torchreid
YAML config trains an anonymization encoder G, the ReID model C and, optionally, a recovery
decoder; anonymized images are published as ordinary JPEG/PNG files, with the original sealed
(encrypted and authenticated) for the key holder; video anonymization hides every detected person
and reports its privacy recall.

    pip install torchreid-privacy
    torchreid-privacy demo

Python 3.9+, PyTorch 2.1+, runs on CPU; Triton kernels on a CUDA GPU. MIT licence.
"""

setup(
    name="torchreid-privacy",
    version=VERSION,
    description=(
        "Train any torchreid backbone identity-invariant on raw and reversibly anonymized "
        "pedestrian images (Zhang, Ye & Yang, ACM MM 2022)"
    ),
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=[
        "torchreid_privacy",
        "torchreid_privacy.data",
        "torchreid_privacy.attacks",
        "torchreid_privacy.cli",
        "torchreid_privacy.export",
        "torchreid_privacy.metrics",
        "torchreid_privacy.models",
        "torchreid_privacy.publish",
        "torchreid_privacy.sealing",
        "torchreid_privacy.bench",
        "torchreid_privacy.folders",
        "torchreid_privacy.search",
        "torchreid_privacy.studies",
        "torchreid_privacy.utils",
        "torchreid_privacy.video",
        "torchreid_privacy.video.detectors",
        "torchreid_privacy.visualization",
        "torchreid_privacy.plugins",
        "torchreid_privacy.plugins.engine",
        "torchreid_privacy.kernels",
        "torchreid_privacy.configs",
    ],
    package_dir={
        "torchreid_privacy": "torchreid_privacy",
        "torchreid_privacy.plugins": "plugins",
        "torchreid_privacy.plugins.engine": "plugins/engine",
        "torchreid_privacy.kernels": "kernels",
        "torchreid_privacy.configs": "configs",
    },
    package_data={"torchreid_privacy.configs": ["*.yaml"]},
    install_requires=[
        # torchvision pins its torch release, so the resolver picks a matched pair.
        "torch>=2.1",
        "torchvision>=0.16",
        "torchreid==0.2.5",
        # what `import torchreid` needs; the PyPI wheel declares none of it
        "scipy",
        # OpenCV 5 wheels dropped HOGDescriptor, the people detector that needs no download
        "opencv-python-headless<5",
        "gdown",
        "tensorboard",
        "Pillow",
        "triton; platform_system == 'Linux'",
        "scikit-learn",
        "pyyaml",
        "tqdm",
        "cryptography",
        # the differentiable JPEG that G trains through (privacy.publish.train_through)
        "kornia",
        # frontier.png
        "matplotlib",
        # video in and out (make-data --from-video, anonymize --input VIDEO); FFmpeg comes with the wheel
        "av",
        # ByteTrack links detections into tracklets; 0.31 moved it to `trackers`, which needs the GUI
        # opencv-python that clashes with torchreid's headless OpenCV
        "supervision>=0.30,<0.31",
    ],
    extras_require={
        # ONNX export (torchreid-privacy export) and onnxruntime inference (anonymize --onnx)
        "export": ["onnx", "onnxruntime", "onnxscript"],
        # a faiss index for search over large galleries (search --index flat|ivf|ivfpq)
        "index": ["faiss-cpu"],
        # the documentation site: mkdocs build --strict (CI builds it)
        "docs": ["mkdocs", "mkdocs-material", "mkdocstrings[python]"],
        "test": ["pytest", "pytest-benchmark", "hypothesis", "scikit-image", "onnx", "onnxruntime", "onnxscript",
                 "faiss-cpu"],
    },
    entry_points={"console_scripts": ["torchreid-privacy = torchreid_privacy.__main__:console"]},
    license="MIT",
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
