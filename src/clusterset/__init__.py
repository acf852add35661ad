"""clusterset: one DNS name for a Kubernetes service, whichever cluster it runs in."""

__all__ = ["__version__"]

__version__ = "0.1.0"
