"""NetworkPolicy: its meaning (`semantics`, pure Kubernetes rules) and kube-router's datapath
(`names`, `ipset`, `kube_router`)."""
