"""A local HTTPS emulator of Entra ID, Azure Resource Manager, Key Vault, Graph and the Kubernetes API.

It imports nothing from Django: the portal and its tests reach it only over the wire, through the real SDKs.
"""

from .client import EmulatorClient
from .config import Config, load
from .server import Emulator

__all__ = ["Emulator", "EmulatorClient", "Config", "load"]
