"""NetworkPolicy: its meaning (`semantics`, pure Kubernetes rules) and its datapath."""
