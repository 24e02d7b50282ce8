"""torchreid-privacy: privacy-preserving person re-identification as torchreid plugins."""
from setuptools import setup

setup(
    name="torchreid-privacy",
    version="0.1.0",
    description=(
        "Train any torchreid backbone identity-invariant on raw and reversibly anonymized "
        "pedestrian images (Zhang, Ye & Yang, ACM MM 2022)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
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
        "test": ["pytest", "pytest-benchmark", "hypothesis", "scikit-image", "onnx", "onnxruntime", "onnxscript",
                 "faiss-cpu"],
    },
    entry_points={"console_scripts": ["torchreid-privacy = torchreid_privacy.__main__:console"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
