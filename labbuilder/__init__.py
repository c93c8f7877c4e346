"""labbuilder: Kubernetes-shaped network labs from Docker containers, without Kubernetes."""

__version__ = "0.1.0"
