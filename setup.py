"""xcompress: extreme parameter compression of BERT-family encoders (shared-core Tucker + distillation)."""
from setuptools import setup

setup(
    name="xcompress",
    version="0.1.0",
    description="Shared-core Tucker compression, distillation, pruning and quantization of BERT encoders",
    python_requires=">=3.10",
    packages=["stagekit", "modeling", "corpora", "pregenerate", "decompose", "tasks", "distill", "text2text", "compress"],
    install_requires=[
        "torch==2.13.0",
        "transformers>=5.0,<6",
        "tokenizers",
        "huggingface_hub",
        "tensorly>=0.9",
        "safetensors",
        "tqdm",
        "numpy",
        "scipy",
        "mwparserfromhell",
        "indexed_bzip2",
        "nupunkt",
        "sacrebleu",
        "babel",
        "pyyaml",
        "psutil",
        "matplotlib",
        "onnx",
        "onnxruntime",
        "onnxscript",
    ],
    # Training stages write TensorBoard event files beside their log when it is installed.
    extras_require={"tensorboard": ["tensorboard"]},
    entry_points={"console_scripts": ["xcompress=stagekit.cli:run_as_program"]},
)
