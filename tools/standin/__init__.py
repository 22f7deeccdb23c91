"""Local AWS IoT stand-in: mosquitto with mutual TLS, a Jobs service, files and a control plane."""

from tools.standin.standin import StandIn

__all__ = ["StandIn"]
