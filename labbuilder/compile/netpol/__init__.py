"""NetworkPolicy: kube-router's enforcement as data (`names`, `kube_router`)."""
