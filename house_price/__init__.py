"""The `house-price` command: train, evaluate, predict, explain, tune, export and the analyses, from any folder."""

from pathlib import Path

# The checkout's models/, datamodules/ and analysis/ folders are this package's subpackages (pyproject.toml's
# package-dir installs them inside it). Imported from a checkout, installed in editable mode or not, they are
# found beside this folder.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "models" / "__init__.py").is_file():
    __path__.append(str(_checkout))
