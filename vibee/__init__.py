"""VIBEE: Telegram accounts under AI automation (digital twin, lead sniper, observer)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vibee")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
