//! A Kubernetes API simulator (see issue: kube-sim).
